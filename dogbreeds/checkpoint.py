"""Run folders: the on-disk format of a trained model, written atomically and read without unpickling code.

A run folder contains:

- ``config.json``: format version, architecture, classes, preprocessing, training config, metrics, versions;
- ``model.safetensors``: weights of the best epoch;
- ``last.safetensors``: weights of the last completed epoch;
- ``history.json``: one dict of metrics per epoch;
- ``optimizer.safetensors`` + ``trainer_state.json``: optimizer, scheduler and trainer state for resuming;
- ``evaluation.json`` and ``confusion_matrix.png``: written by ``dogbreeds.evaluate``.

A folder downloaded from the Hugging Face Hub may contain only ``config.json`` and ``model.safetensors``, and
:func:`load_model` needs nothing else. Every file is replaced atomically, so a crash mid-write leaves the previous
version in place. Loading reads safetensors and JSON only. A legacy ``.pth``/``.pt`` file is read with
``torch.load(weights_only=True)``, which rejects any pickle that would construct objects other than tensors and
plain containers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import platform
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file as load_safetensors_file
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from dogbreeds.models import MODEL_FAMILY, MODEL_NAMES, check_image_size, count_parameters, create_model
from dogbreeds.models import unwrap_model

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
LAST_FILE = "last.safetensors"
HISTORY_FILE = "history.json"
OPTIMIZER_FILE = "optimizer.safetensors"
TRAINER_STATE_FILE = "trainer_state.json"
EVALUATION_FILE = "evaluation.json"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"

LEGACY_SUFFIXES = (".pth", ".pt")

# Prefixes that torch.compile and (Distributed)DataParallel add to state_dict keys.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")

# Markers used by the training-state encoding for values that JSON cannot represent exactly.
_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_INT_KEYS = "__int_keys__"
_FLOAT = "__float__"
_MARKERS = (_TENSOR, _TUPLE, _INT_KEYS, _FLOAT)


class CheckpointError(ValueError):
    """Run folder or weights file that is missing, corrupt, or does not match the model it describes."""


# ---------------------------------------------------------------------------------------------------------------
# Atomic writes


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync and os.replace.

    Readers see either the old file or the complete new one. The temporary file is removed if any step fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    # os.open with mode 0o666 lets the umask decide the permissions, as a plain open(path, "wb") does. tempfile
    # would create the file readable by its owner only.
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise

    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # Persists the rename itself. Windows cannot open a directory, so the step is skipped there.
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON, atomically.

    Paths become strings, tuples become lists, and NaN or infinite floats become null, because standard JSON has
    no literal for them.
    """
    text = json.dumps(_to_json(obj), indent=2, ensure_ascii=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def _to_json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, torch.Tensor) or callable(getattr(value, "tolist", None)):
        # Tensors, numpy arrays and numpy scalars: tolist() returns Python numbers or nested lists.
        return _to_json(value.tolist())
    raise TypeError(f"Cannot write a value of type {type(value).__name__} to JSON: {value!r}.")


def _read_json(path: Path, description: str) -> Any:
    if not path.is_file():
        raise CheckpointError(f"Missing {description}: {path} does not exist.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({error}). Restore it from a copy or train the run again."
        ) from error


# ---------------------------------------------------------------------------------------------------------------
# Weights


def save_weights(path: Path, model: nn.Module) -> None:
    """Save the state_dict of ``model`` (unwrapped from torch.compile or DDP) to a safetensors file, atomically."""
    plain = unwrap_model(model)
    state = {key: tensor.detach().cpu().contiguous() for key, tensor in plain.state_dict().items()}
    metadata = {"format": "pt", "architecture": str(getattr(plain, "architecture", type(plain).__name__))}
    atomic_write_bytes(Path(path), save_safetensors_bytes(state, metadata=metadata))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from a ``.safetensors`` file or, with weights_only loading, a legacy ``.pth``/``.pt``."""
    path = Path(path)
    if path.suffix in LEGACY_SUFFIXES:
        return load_legacy_weights(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(
            f"Unsupported weights file {path}: expected a .safetensors file (or a legacy .pth/.pt state_dict)."
        )
    if not path.is_file():
        raise CheckpointError(f"Missing weights file: {path} does not exist. Check the run folder or train again.")

    try:
        return load_safetensors_file(path)
    except SafetensorError as error:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({error}). Download or copy the file again, or train the run again."
        ) from error


def load_legacy_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from a legacy ``.pth``/``.pt`` file with ``torch.load(weights_only=True)`` only.

    Accepts a plain state_dict or a dict that stores one under ``state_dict``, ``model_state_dict`` or ``model``.
    Any file that needs to unpickle code is rejected with a CheckpointError before anything runs.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Missing weights file: {path} does not exist.")

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"Rejected {path}: it contains pickled objects other than tensors and plain containers "
            f"({_unpickling_reason(error)}). dogbreeds never unpickles code from weights files. Save a plain "
            "state_dict instead, with torch.save(model.state_dict(), path) or safetensors, in a trusted environment."
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as error:
        raise CheckpointError(f"{path} is corrupt or not a PyTorch weights file ({error}).") from error

    state = _find_state_dict(loaded)
    if state is None:
        raise CheckpointError(
            f"{path} does not contain a state_dict: expected a dict of tensors (or one stored under 'state_dict', "
            f"'model_state_dict' or 'model'); found {_describe(loaded)}."
        )
    return _strip_wrapper_prefixes(state)


def _unpickling_reason(error: pickle.UnpicklingError) -> str:
    # torch's message is several paragraphs long; the line naming the rejected global is the useful part.
    # It also suggests allow-listing the global, which is exactly what must not be done for untrusted files.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "WeightsUnpickler error:" in line:
            reason = line.split("WeightsUnpickler error:", 1)[1].strip()
            return reason.split(" was not an allowed global")[0].split(". Please")[0]
    return lines[0] if lines else type(error).__name__


def _find_state_dict(loaded: Any) -> dict[str, torch.Tensor] | None:
    if _is_state_dict(loaded):
        return dict(loaded)
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if _is_state_dict(loaded.get(key)):
                return dict(loaded[key])
    return None


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(key, str) and isinstance(item, torch.Tensor) for key, item in value.items())
    )


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        keys = list(value)[:5]
        return f"a dict with keys {keys}{' ...' if len(value) > 5 else ''}"
    return f"a {type(value).__name__}"


def _strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _WRAPPER_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, num_classes: int) -> None:
    """Raise CheckpointError when ``state`` cannot load into ``model``, naming the file, the keys and the shapes."""
    expected = unwrap_model(model).state_dict()
    architecture = getattr(unwrap_model(model), "architecture", type(model).__name__)

    head = state.get("fc.weight")
    if head is not None and head.dim() == 2 and head.shape[0] != num_classes:
        raise CheckpointError(
            f"The classifier in {path} has {head.shape[0]} outputs, but config.json lists {num_classes} classes. "
            "The weights and config.json come from different runs: copy both files from the same run folder."
        )

    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"The weights in {path} do not match the {architecture} architecture named in config.json: "
            f"missing keys {_preview(missing)}, unexpected keys {_preview(unexpected)}. Check that the file was "
            "saved from the architecture in config.json."
        )

    mismatched = [
        f"{key}: expected {tuple(expected[key].shape)}, found {tuple(state[key].shape)}"
        for key in expected
        if tuple(expected[key].shape) != tuple(state[key].shape)
    ]
    if mismatched:
        raise CheckpointError(
            f"The weights in {path} have shapes that do not match {architecture} at the image size in config.json: "
            f"{_preview(mismatched)}. Check image_size and num_classes in config.json."
        )


def _preview(items: list[str], limit: int = 5) -> str:
    listed = ", ".join(items[:limit]) if items else "none"
    return f"[{listed}{f', ... ({len(items)} in all)' if len(items) > limit else ''}]"


# ---------------------------------------------------------------------------------------------------------------
# Run config


def build_run_config(
    model: nn.Module,
    *,
    class_keys: list[str],
    class_names: list[str],
    train_config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    flops: int | None = None,
) -> dict[str, Any]:
    """Build the config.json contents for ``model``: architecture, classes, preprocessing, size, cost, versions.

    ``flops`` defaults to one forward pass counted with :func:`dogbreeds.models.flops_per_image`.
    """
    from dogbreeds import transforms
    from dogbreeds.models import flops_per_image

    plain = unwrap_model(model)
    architecture = plain.architecture
    image_size = plain.image_size
    if flops is None:
        flops = flops_per_image(plain, image_size)

    return {
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "family": MODEL_FAMILY[architecture],
        "num_classes": len(class_keys),
        "class_keys": list(class_keys),
        "class_names": list(class_names),
        "image_size": image_size,
        "resize_size": transforms.resize_size(image_size),
        "normalization": {"mean": list(transforms.IMAGENET_MEAN), "std": list(transforms.IMAGENET_STD)},
        "parameters": count_parameters(plain),
        "flops_per_image": flops,
        "train_config": dict(train_config or {}),
        "metrics": dict(metrics or {}),
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def library_versions() -> dict[str, str]:
    """Return the versions of Python, dogbreeds and the libraries that affect training results."""
    import numpy
    import PIL
    import safetensors
    import torchvision

    import dogbreeds

    return {
        "python": platform.python_version(),
        "dogbreeds": dogbreeds.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "safetensors": safetensors.__version__,
    }


def write_run_config(run_dir: Path, config: Mapping[str, Any]) -> None:
    """Validate ``config`` and write it to ``run_dir/config.json``, atomically."""
    run_dir = Path(run_dir)
    config = dict(config)
    config.setdefault("format_version", FORMAT_VERSION)
    validate_run_config(config, run_dir / CONFIG_FILE)
    atomic_write_json(run_dir / CONFIG_FILE, config)


def read_run_config(run_dir: Path | str) -> dict[str, Any]:
    """Read and validate ``run_dir/config.json``, raising CheckpointError that names the file and the problem."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(
            f"Run folder {run_dir} does not exist or is not a folder. Pass a folder that contains config.json and "
            "model.safetensors."
        )

    path = run_dir / CONFIG_FILE
    config = _read_json(path, "run config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} must contain a JSON object; found {type(config).__name__}.")

    validate_run_config(config, path)
    config.setdefault("family", MODEL_FAMILY[config["architecture"]])
    return config


def validate_run_config(config: Mapping[str, Any], path: Path) -> None:
    """Raise CheckpointError unless ``config`` has a readable format version and consistent model fields."""
    version = config.get("format_version")
    if version is None:
        raise CheckpointError(
            f"{path} has no format_version, so it is not a run config written by dogbreeds. Pass a run folder "
            "created by python -m dogbreeds.train or downloaded from the Hub."
        )
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path}: format_version must be an integer; found {version!r}.")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses run format {version}, but this dogbreeds reads format {FORMAT_VERSION} or older. "
            "Upgrade dogbreeds."
        )

    architecture = config.get("architecture")
    if architecture not in MODEL_NAMES:
        raise CheckpointError(
            f"{path}: unknown architecture {architecture!r}; expected one of {', '.join(MODEL_NAMES)}. The run was "
            "written by another program or a newer dogbreeds: upgrade dogbreeds or train the run again."
        )

    num_classes = config.get("num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise CheckpointError(f"{path}: num_classes must be an integer >= 2; found {num_classes!r}.")
    for key in ("class_keys", "class_names"):
        values = config.get(key)
        if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
            raise CheckpointError(f"{path}: {key} must be a list of strings; found {_describe(values)}.")
        if len(values) != num_classes:
            raise CheckpointError(
                f"{path}: {key} has {len(values)} entries, but num_classes is {num_classes}. Fix config.json so "
                "both agree with the model's classifier."
            )
    if len(set(config["class_keys"])) != num_classes:
        raise CheckpointError(f"{path}: class_keys contains duplicates; each class needs a unique key.")

    try:
        check_image_size(architecture, config.get("image_size"))
    except ValueError as error:
        raise CheckpointError(f"{path}: invalid image_size: {error}") from error


def read_history(run_dir: Path | str) -> list[dict[str, Any]]:
    """Read ``run_dir/history.json``, one dict per completed epoch, or return [] when the file does not exist."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.exists():
        return []
    history = _read_json(path, "training history")
    if not isinstance(history, list) or not all(isinstance(entry, dict) for entry in history):
        raise CheckpointError(f"{path} must contain a list of per-epoch objects; found {_describe(history)}.")
    return history


def write_history(run_dir: Path, history: list[Mapping[str, Any]]) -> None:
    """Write the per-epoch metrics to ``run_dir/history.json``, atomically."""
    atomic_write_json(Path(run_dir) / HISTORY_FILE, [dict(entry) for entry in history])


# ---------------------------------------------------------------------------------------------------------------
# Loading a model


def load_model(
    run_dir: Path | str, device: str | torch.device = "cpu", weights: str = MODEL_FILE
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model described by ``run_dir/config.json``, load ``run_dir/weights`` and return it in eval mode.

    ``weights`` may name a safetensors file (``model.safetensors``, ``last.safetensors``) or a legacy
    ``.pth``/``.pt`` state_dict, which is read with weights_only loading.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    path = run_dir / weights
    state = read_weights(path)

    model = create_model(config["architecture"], config["num_classes"], config["image_size"])
    check_state_dict(model, state, path, config["num_classes"])
    model.load_state_dict(state)

    model.to(device)
    model.eval()
    logger.info("Loaded %s (%d classes, %d px) from %s", config["architecture"], config["num_classes"],
                config["image_size"], path)
    return model, config


# ---------------------------------------------------------------------------------------------------------------
# Training state for resuming


def save_training_state(
    run_dir: Path, optimizer: torch.optim.Optimizer, scheduler: Any | None, state: Mapping[str, Any]
) -> None:
    """Save optimizer, scheduler and trainer ``state`` as tensors (optimizer.safetensors) plus JSON.

    Tensors go to ``optimizer.safetensors`` under keys such as ``optimizer/state/0/momentum_buffer``. Everything
    else goes to ``trainer_state.json``. Markers stand in for tensors, tuples, integer dict keys and non-finite
    floats, so loading restores the exact values. Functions and other objects are rejected: LambdaLR stores
    only callable objects' attributes, never the lambdas, and the caller rebuilds the lambdas.
    """
    run_dir = Path(run_dir)
    tensors: dict[str, torch.Tensor] = {}
    save_id = uuid.uuid4().hex

    document = {
        "format_version": FORMAT_VERSION,
        "save_id": save_id,
        "optimizer_class": type(optimizer).__name__,
        "optimizer": _encode(optimizer.state_dict(), "optimizer", tensors),
        "scheduler_class": type(scheduler).__name__ if scheduler is not None else None,
        "scheduler": _encode(scheduler.state_dict(), "scheduler", tensors) if scheduler is not None else None,
        "state": _encode(dict(state), "state", tensors),
    }

    # The tensors are written first, so a crash in between leaves a JSON file whose save_id no longer matches
    # and load_training_state reports it instead of mixing two saves.
    atomic_write_bytes(run_dir / OPTIMIZER_FILE, save_safetensors_bytes(tensors, metadata={"save_id": save_id}))
    atomic_write_bytes(run_dir / TRAINER_STATE_FILE, (json.dumps(document, indent=1) + "\n").encode("utf-8"))


def load_training_state(run_dir: Path | str, optimizer: torch.optim.Optimizer, scheduler: Any | None) -> dict:
    """Restore ``optimizer`` and ``scheduler`` from a run folder and return the trainer state saved with them."""
    run_dir = Path(run_dir)
    json_path = run_dir / TRAINER_STATE_FILE
    tensor_path = run_dir / OPTIMIZER_FILE

    document = _read_json(json_path, "trainer state")
    if not isinstance(document, dict) or not isinstance(document.get("format_version"), int):
        raise CheckpointError(f"{json_path} is not a dogbreeds trainer state file (no format_version).")
    if document["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{json_path} uses format {document['format_version']}. Upgrade dogbreeds.")

    tensors, save_id = _read_state_tensors(tensor_path)
    if save_id != document.get("save_id"):
        raise CheckpointError(
            f"{tensor_path} and {json_path} come from different saves (save_id {save_id!r} vs "
            f"{document.get('save_id')!r}), probably because training stopped between the two writes. Resume "
            "from a run whose training state is complete, or start a new run."
        )

    _check_class(document.get("optimizer_class"), optimizer, json_path, "optimizer")
    try:
        optimizer.load_state_dict(_decode(document["optimizer"], tensors, tensor_path))
    except (ValueError, KeyError) as error:
        raise CheckpointError(
            f"The optimizer state in {json_path} does not fit this optimizer ({error}). Resume with the same "
            "architecture and optimizer settings as the saved run."
        ) from error

    if scheduler is not None:
        if document.get("scheduler") is None:
            raise CheckpointError(f"{json_path} has no scheduler state, but a scheduler was given to restore.")
        _check_class(document.get("scheduler_class"), scheduler, json_path, "scheduler")
        try:
            scheduler.load_state_dict(_decode(document["scheduler"], tensors, tensor_path))
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise CheckpointError(
                f"The scheduler state in {json_path} does not fit this scheduler ({error}). Resume with the same "
                "schedule settings as the saved run."
            ) from error

    return _decode(document.get("state", {}), tensors, tensor_path)


def _read_state_tensors(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    if not path.is_file():
        raise CheckpointError(f"Missing optimizer state: {path} does not exist.")
    try:
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except SafetensorError as error:
        raise CheckpointError(f"{path} is corrupt or truncated ({error}).") from error

    return tensors, metadata.get("save_id")


def _check_class(saved: Any, current: Any, path: Path, what: str) -> None:
    if saved != type(current).__name__:
        raise CheckpointError(
            f"{path} stores the state of a {saved} {what}, but a {type(current).__name__} was given. Resume with "
            f"the {what} the run was trained with."
        )


def _encode(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        if key in tensors:
            raise CheckpointError(f"Two training-state tensors map to the same key {key!r}.")
        tensors[key] = value.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(value, Mapping):
        return _encode_mapping(value, key, tensors)
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(item, f"{key}/{index}", tensors) for index, item in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(item, f"{key}/{index}", tensors) for index, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT: repr(value)}
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    raise CheckpointError(
        f"Cannot save training state at {key!r}: a {type(value).__name__} is not a tensor or plain data "
        "(number, string, list, dict). Keep functions out of saved state and rebuild them when resuming."
    )


def _encode_mapping(value: Mapping, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if all(isinstance(name, str) for name in value):
        if len(value) == 1 and next(iter(value)) in _MARKERS:
            raise CheckpointError(f"Cannot save training state at {key!r}: the key {next(iter(value))!r} is reserved.")
        return {name: _encode(item, f"{key}/{name}", tensors) for name, item in value.items()}
    if all(isinstance(name, int) and not isinstance(name, bool) for name in value):
        # Optimizer state is keyed by integer parameter ids, which JSON would turn into strings.
        return {_INT_KEYS: {str(name): _encode(item, f"{key}/{name}", tensors) for name, item in value.items()}}
    raise CheckpointError(f"Cannot save training state at {key!r}: dict keys must be all strings or all integers.")


def _decode(value: Any, tensors: Mapping[str, torch.Tensor], path: Path) -> Any:
    if isinstance(value, list):
        return [_decode(item, tensors, path) for item in value]
    if not isinstance(value, dict):
        return value

    if len(value) == 1:
        marker, content = next(iter(value.items()))
        if marker == _TENSOR:
            if content not in tensors:
                raise CheckpointError(f"{path} is missing the tensor {content!r}; the training state is incomplete.")
            return tensors[content]
        if marker == _TUPLE:
            return tuple(_decode(item, tensors, path) for item in content)
        if marker == _INT_KEYS:
            return {int(name): _decode(item, tensors, path) for name, item in content.items()}
        if marker == _FLOAT:
            return float(content)

    return {name: _decode(item, tensors, path) for name, item in value.items()}


# ---------------------------------------------------------------------------------------------------------------
# Listing runs


@dataclass(frozen=True)
class RunSummary:
    """Summary of one run folder for run pickers and result tables."""

    run_dir: Path
    name: str
    architecture: str
    family: str
    num_classes: int
    image_size: int
    params: int | None
    flops_per_image: int | None
    pretrained: bool
    best_epoch: int | None
    best_top1: float | None
    best_top5: float | None
    epochs: int
    train_seconds: float | None
    stopped: bool
    created: str | None
    has_weights: bool
    history: list[dict[str, Any]] = field(default_factory=list)


def list_runs(root: Path | str) -> list[RunSummary]:
    """Summarise every subfolder of ``root`` with a valid config.json, newest first.

    Folders without config.json are skipped silently; folders with an invalid one are skipped with a warning. A
    missing ``root`` yields an empty list, since no run has been trained yet.
    """
    root = Path(root)
    if not root.exists():
        return []
    if not root.is_dir():
        raise NotADirectoryError(f"Runs folder {root} is a file; pass the folder that contains the run folders.")

    summaries = []
    for run_dir in sorted(path for path in root.iterdir() if path.is_dir()):
        if not (run_dir / CONFIG_FILE).exists():
            continue
        try:
            summaries.append(summarize_run(run_dir))
        except CheckpointError as error:
            logger.warning("Skipping run folder %s: %s", run_dir, error)

    summaries.sort(key=lambda summary: (summary.created or "", summary.name), reverse=True)
    return summaries


def summarize_run(run_dir: Path | str) -> RunSummary:
    """Build the RunSummary of one run folder; raise CheckpointError when its config.json is invalid."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    metrics = config.get("metrics") or {}
    train_config = config.get("train_config") or {}

    try:
        history = read_history(run_dir)
    except CheckpointError as error:
        logger.warning("Ignoring the history of %s: %s", run_dir, error)
        history = []

    epochs = metrics.get("epochs_completed")
    if not isinstance(epochs, int):
        epochs = len(history)

    return RunSummary(
        run_dir=run_dir,
        name=run_dir.name,
        architecture=config["architecture"],
        family=config["family"],
        num_classes=config["num_classes"],
        image_size=config["image_size"],
        params=_optional_number(config.get("parameters"), int),
        flops_per_image=_optional_number(config.get("flops_per_image"), int),
        pretrained=bool(train_config.get("pretrained", False)),
        best_epoch=_optional_number(metrics.get("best_epoch"), int),
        best_top1=_optional_number(metrics.get("best_top1"), float),
        best_top5=_optional_number(metrics.get("best_top5"), float),
        epochs=epochs,
        train_seconds=_optional_number(metrics.get("train_seconds"), float),
        stopped=bool(metrics.get("stopped", False)),
        created=config.get("created") if isinstance(config.get("created"), str) else None,
        has_weights=(run_dir / MODEL_FILE).is_file(),
        history=history,
    )


def _optional_number(value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return kind(value)
