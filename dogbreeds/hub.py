"""Download training runs from the Hugging Face Hub and push runs to it.

A run on the Hub is the run folder's `config.json` and `model.safetensors` (plus, when present, `history.json`,
`evaluation.json` and `confusion_matrix.png`) at the repo root or in a subfolder, with a generated model card as
the repo's README.md. Downloads go through `huggingface_hub` into its cache, so a run loaded once loads again
without a network.

CLI:
    python -m dogbreeds.hub push RUN_DIR REPO_ID [--path-in-repo SUBFOLDER] [--private] [--revision BRANCH]
    python -m dogbreeds.hub download REPO_ID [--revision REV] [--subfolder SUBFOLDER]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger(__name__)

REQUIRED_FILES: tuple[str, ...] = ("config.json", "model.safetensors")
OPTIONAL_FILES: tuple[str, ...] = ("history.json", "evaluation.json", "confusion_matrix.png")

# Files that train a run further (optimizer state, last epoch) stay local: they are large and only useful for --resume.
PUSH_FILES: tuple[str, ...] = REQUIRED_FILES + OPTIONAL_FILES

ERROR_KINDS: tuple[str, ...] = (
    "invalid_repo_id",
    "repo_not_found",
    "revision_not_found",
    "file_not_found",
    "offline",
    "not_cached",
    "server_error",
    "invalid_run",
    "cache_error",
)


class HubError(RuntimeError):
    """A Hub download or push failed; `kind` is one of ERROR_KINDS so a UI can show its own translated message."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        repo_id: str = "",
        revision: str | None = None,
        filename: str = "",
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.repo_id = repo_id
        self.revision = revision
        self.filename = filename
        self.detail = detail


@dataclass(frozen=True)
class HubRun:
    """A run downloaded from the Hub: the local snapshot folder and where it came from."""

    run_dir: Path
    repo_id: str
    revision: str | None
    subfolder: str | None
    commit: str | None

    @property
    def label(self) -> str:
        """Return the repo spec in the form `owner/name[/subfolder][@revision]`."""
        spec = self.repo_id
        if self.subfolder:
            spec += "/" + self.subfolder
        if self.revision:
            spec += "@" + self.revision
        return spec


def parse_repo_spec(spec: str) -> tuple[str, str | None, str | None]:
    """Split `owner/name[/subfolder][@revision]` into (repo_id, revision, subfolder).

    The repo id must have an owner, because the parts after the second slash are the subfolder.
    """
    text = spec.strip()
    revision: str | None = None
    if "@" in text:
        text, revision = text.split("@", 1)
        revision = revision.strip() or None

    parts = [part for part in text.strip().strip("/").split("/") if part]
    if len(parts) < 2:
        raise HubError(
            "invalid_repo_id",
            f"Invalid Hub repo spec {spec!r}: expected 'owner/name', optionally followed by '/subfolder' "
            "and '@revision' (for example 'alice/dogbreeds-cnn@main').",
            repo_id=spec,
        )
    repo_id = "/".join(parts[:2])
    subfolder = "/".join(parts[2:]) or None
    return repo_id, revision, subfolder


def parse_repo_specs(text: str) -> list[tuple[str, str | None, str | None]]:
    """Parse a comma- or whitespace-separated list of repo specs (the DOGBREEDS_HUB_REPO format)."""
    specs = [item for item in text.replace(",", " ").split() if item]
    return [parse_repo_spec(item) for item in specs]


def validate_repo_id(repo_id: str) -> str:
    """Check `repo_id` with huggingface_hub's rules and return it stripped; raise HubError(kind="invalid_repo_id")."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hf_validate_repo_id

    cleaned = (repo_id or "").strip()
    if not cleaned:
        raise HubError(
            "invalid_repo_id",
            "No Hub repo id given: enter one in the form 'owner/name', for example 'alice/dogbreeds-cnn'.",
            repo_id=cleaned,
        )
    try:
        hf_validate_repo_id(cleaned)
    except HFValidationError as error:
        raise HubError(
            "invalid_repo_id",
            f"Invalid Hub repo id {cleaned!r}: {error} Use the form 'owner/name' with letters, digits, '-', '_' "
            "or '.'.",
            repo_id=cleaned,
            detail=str(error),
        ) from error
    return cleaned


def download_run(
    repo_id: str,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> HubRun:
    """Download a run's files into the huggingface_hub cache and return the local run folder.

    Without a network, files already in the cache are used. Every failure raises HubError with a `kind` that
    distinguishes a missing repo, revision or file from a missing network.
    """
    repo_id = validate_repo_id(repo_id)
    revision = (revision or "").strip() or None
    subfolder = (subfolder or "").strip().strip("/") or None
    target = _Target(repo_id, revision, subfolder, cache_dir, endpoint, token)

    # One HEAD request without retries decides between the network and the cache. hf_hub_download alone would
    # retry a failed connection for about 20 s before it reports a file missing from the cache.
    offline_reason: Exception | None = None
    if not local_files_only:
        offline_reason = _probe(target, REQUIRED_FILES[0])
    use_cache_only = local_files_only or offline_reason is not None

    paths: dict[str, Path] = {}
    for filename in REQUIRED_FILES:
        paths[filename] = _download_file(target, filename, use_cache_only, offline_reason)

    run_dir = paths["config.json"].parent
    if paths["model.safetensors"].parent != run_dir:
        raise HubError(
            "invalid_run",
            f"Hub repo {repo_id!r} served config.json and model.safetensors from different snapshots "
            f"({run_dir} and {paths['model.safetensors'].parent}); the repo changed during the download. Load it again.",
            repo_id=repo_id,
            revision=revision,
        )
    _check_run_config(run_dir, repo_id, revision)
    commit = _snapshot_commit(run_dir, subfolder)

    for filename in OPTIONAL_FILES:
        # A missing optional file only costs the Results tab its curves or the confusion matrix.
        _download_optional_file(target, filename, commit, use_cache_only)

    logger.info("Loaded run %s (commit %s) into %s", repo_id, commit, run_dir)
    return HubRun(run_dir=run_dir, repo_id=repo_id, revision=revision, subfolder=subfolder, commit=commit)


@dataclass(frozen=True)
class _Target:
    """Location of a run's files (repo, revision, subfolder) and the cache, endpoint and token to use."""

    repo_id: str
    revision: str | None
    subfolder: str | None
    cache_dir: str | Path | None
    endpoint: str | None
    token: str | bool | None

    def path_in_repo(self, filename: str) -> str:
        return f"{self.subfolder}/{filename}" if self.subfolder else filename


def _probe(target: _Target, filename: str) -> Exception | None:
    """Send one HEAD request for `filename`; return the connection or server error, or None when the Hub responded.

    Repo, revision and file errors raise HubError at once, since the cache cannot help with them.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (
        FileMetadataError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    url = hf_hub_url(
        target.repo_id, target.path_in_repo(filename), revision=target.revision, endpoint=target.endpoint
    )
    try:
        get_hf_file_metadata(url, token=target.token, endpoint=target.endpoint)
    except (RepositoryNotFoundError, RevisionNotFoundError, RemoteEntryNotFoundError) as error:
        raise _translate_error(error, target, filename) from error
    except (OfflineModeIsEnabled, HfHubHTTPError, FileMetadataError) as error:
        return error
    except Exception as error:  # noqa: BLE001 - only connection failures are expected here
        if _is_network_error(error):
            return error
        raise
    return None


def _download_file(target: _Target, filename: str, cache_only: bool, offline_reason: Exception | None) -> Path:
    """Download one file with hf_hub_download (or take it from the cache) and translate its exceptions."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        local_path = hf_hub_download(
            target.repo_id,
            filename,
            subfolder=target.subfolder,
            revision=target.revision,
            cache_dir=target.cache_dir,
            endpoint=target.endpoint,
            token=target.token,
            local_files_only=cache_only,
        )
    except LocalEntryNotFoundError as error:
        if offline_reason is not None:
            raise _translate_cache_miss(offline_reason, target, filename) from error
        raise _translate_error(error, target, filename) from error
    except Exception as error:  # noqa: BLE001 - every Hub error is translated, anything else re-raised unchanged
        raise _translate_error(error, target, filename) from error
    return Path(local_path)


def _download_optional_file(target: _Target, filename: str, commit: str | None, cache_only: bool) -> None:
    """Fetch an optional file of the same commit as the required ones; skip it quietly when it is missing."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    path_in_repo = target.path_in_repo(filename)
    revision = commit or target.revision
    cached = try_to_load_from_cache(target.repo_id, path_in_repo, cache_dir=target.cache_dir, revision=revision)
    # A string is the cached file. The other results (unknown, or known not to exist) leave nothing to load offline.
    if isinstance(cached, str) or cache_only:
        return
    try:
        hf_hub_download(
            target.repo_id,
            filename,
            subfolder=target.subfolder,
            revision=revision,
            cache_dir=target.cache_dir,
            endpoint=target.endpoint,
            token=target.token,
        )
    except Exception as error:  # noqa: BLE001 - optional: any failure only leaves the file out
        logger.info("Optional file %s not loaded from %s: %s", path_in_repo, target.repo_id, error)


def _translate_error(error: Exception, target: _Target, filename: str) -> Exception:
    """Map a huggingface_hub exception to a HubError; return `error` itself when it is not a Hub failure."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id = target.repo_id
    where = target.path_in_repo(filename)
    rev = target.revision or "main"
    common = {"repo_id": repo_id, "revision": target.revision, "filename": where}

    if isinstance(error, GatedRepoError):
        return HubError(
            "repo_not_found",
            f"Hub repo {repo_id!r} is gated: accept its terms on the Hub and set HF_TOKEN to a token with access.",
            detail="gated",
            **common,
        )
    if isinstance(error, RepositoryNotFoundError):
        return HubError(
            "repo_not_found",
            f"Hub repo {repo_id!r} not found. Check the spelling; a private repo also needs HF_TOKEN set to a token "
            "with read access.",
            **common,
        )
    if isinstance(error, RevisionNotFoundError):
        return HubError(
            "revision_not_found",
            f"Revision {rev!r} not found in Hub repo {repo_id!r}. Use a branch, tag or commit hash that exists, "
            "or leave the revision empty for 'main'.",
            **common,
        )
    if isinstance(error, RemoteEntryNotFoundError):
        return HubError(
            "file_not_found",
            f"File {where!r} not found in Hub repo {repo_id!r} at revision {rev!r}. A run needs config.json and "
            "model.safetensors; check the subfolder, or push a run with `python -m dogbreeds.hub push`.",
            **common,
        )
    if isinstance(error, LocalEntryNotFoundError):
        return _translate_cache_miss(error.__cause__, target, filename)
    if isinstance(error, OfflineModeIsEnabled) or _is_network_error(error):
        return HubError(
            "offline",
            f"Could not reach the Hub to download {where!r} from {repo_id!r}: {error}. Check the network connection.",
            detail=str(error),
            **common,
        )
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else "unknown"
        return HubError(
            "server_error",
            f"The Hub answered HTTP {status} for {where!r} in {repo_id!r}: {error}. Try again later.",
            detail=str(status),
            **common,
        )
    if isinstance(error, OSError):
        return HubError(
            "cache_error",
            f"Could not write {where!r} from {repo_id!r} into the Hugging Face cache: {error}. Free disk space or "
            "set HF_HOME to a writable folder.",
            detail=str(error),
            **common,
        )
    return error


def _translate_cache_miss(cause: BaseException | None, target: _Target, filename: str) -> HubError:
    """Explain why a file was neither downloaded nor found in the cache; `cause` is why the Hub was not used."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    repo_id = target.repo_id
    where = target.path_in_repo(filename)
    rev = target.revision or "main"
    common: dict[str, Any] = {"repo_id": repo_id, "revision": target.revision, "filename": where}

    if cause is None or isinstance(cause, OfflineModeIsEnabled):
        return HubError(
            "not_cached",
            f"{where!r} from {repo_id!r} at revision {rev!r} is not in the local Hugging Face cache, and Hub "
            "downloads are off (HF_HUB_OFFLINE=1 or local_files_only). Allow downloads once to cache it.",
            **common,
        )
    if isinstance(cause, HfHubHTTPError) and cause.response is not None:
        status = cause.response.status_code
        return HubError(
            "server_error",
            f"The Hub answered HTTP {status} for {where!r} in {repo_id!r}, and the file is not in the local cache. "
            "Try again later.",
            detail=str(status),
            **common,
        )
    if _is_network_error(cause):
        return HubError(
            "offline",
            f"No network connection to the Hub, and {where!r} from {repo_id!r} at revision {rev!r} is not in the "
            "local cache. Connect to the network and load it again.",
            detail=str(cause),
            **common,
        )
    return HubError(
        "server_error",
        f"The server did not answer like the Hugging Face Hub for {where!r} in {repo_id!r} ({cause}), and the file is "
        "not in the local cache. Check HF_ENDPOINT and proxy settings.",
        detail=str(cause),
        **common,
    )


def _is_network_error(error: BaseException) -> bool:
    """Tell whether `error` is a connection or timeout failure of the HTTP client huggingface_hub uses.

    The client library changed across huggingface_hub versions (requests, httpx, httpx2), so the check goes by the
    standard base classes of each: ConnectionError/TimeoutError and the clients' TransportError.
    """
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    return any(cls.__name__ in {"TransportError", "ConnectionError", "Timeout"} for cls in type(error).__mro__)


def _check_run_config(run_dir: Path, repo_id: str, revision: str | None) -> None:
    """Validate the downloaded config.json with the checkpoint module's reader."""
    from dogbreeds.checkpoint import CheckpointError, read_run_config

    try:
        read_run_config(run_dir)
    except (CheckpointError, OSError, ValueError) as error:
        raise HubError(
            "invalid_run",
            f"Hub repo {repo_id!r} does not hold a dogbreeds run: {error} Push a run folder with "
            "`python -m dogbreeds.hub push RUN_DIR REPO_ID`.",
            repo_id=repo_id,
            revision=revision,
            filename="config.json",
            detail=str(error),
        ) from error


def _snapshot_commit(run_dir: Path, subfolder: str | None) -> str | None:
    """Return the commit hash of a huggingface_hub snapshot folder (`.../snapshots/<commit>/[subfolder]`)."""
    snapshot = run_dir
    if subfolder:
        for _ in subfolder.split("/"):
            snapshot = snapshot.parent
    if snapshot.parent.name == "snapshots":
        return snapshot.name
    return None


# ---------------------------------------------------------------------------------------------------------------
# Push


def build_model_card(run_dir: str | Path, repo_id: str, *, subfolder: str | None = None) -> str:
    """Write the README.md text for a run: architecture, classes, metrics and how to load it."""
    run_dir = Path(run_dir)
    config = _read_json(run_dir / "config.json")
    evaluation = _read_json(run_dir / "evaluation.json") if (run_dir / "evaluation.json").is_file() else None

    architecture = str(config.get("architecture", "unknown"))
    family = str(config.get("family", ""))
    class_names = [str(name) for name in config.get("class_names", [])]
    train_config = config.get("train_config") or {}
    metrics = config.get("metrics") or {}
    pretrained = bool(train_config.get("pretrained", False))
    family_text = {"cnn": "convolutional network", "fcn": "fully-connected network (MLP)"}.get(family, family)

    lines = [
        "---",
        "library_name: pytorch",
        "pipeline_tag: image-classification",
        "tags:",
        "- image-classification",
        "- dogbreeds",
        "- stanford-dogs",
        f"- {architecture}",
        "---",
        "",
        f"# {repo_id}: {architecture} on Stanford Dogs",
        "",
        f"A `{architecture}` {family_text} trained with the `dogbreeds` package to tell "
        f"{len(class_names)} dog breeds apart.",
        "",
        "## Model",
        "",
        "| | |",
        "| --- | --- |",
        f"| Architecture | `{architecture}` ({family_text}) |",
        f"| Parameters | {_format_int(config.get('parameters'))} |",
        f"| FLOPs per image (forward) | {_format_int(config.get('flops_per_image'))} |",
        f"| Input | {config.get('image_size', '?')} x {config.get('image_size', '?')} RGB, short side resized to "
        f"{config.get('resize_size', '?')} then centre-cropped |",
        f"| Normalization | mean {_format_list(config.get('normalization', {}).get('mean'))}, "
        f"std {_format_list(config.get('normalization', {}).get('std'))} |",
        f"| ImageNet-pretrained start | {'yes' if pretrained else 'no'} |",
        "",
        "## Training",
        "",
        "| | |",
        "| --- | --- |",
        f"| Epochs completed | {metrics.get('epochs_completed', '?')} (best epoch {metrics.get('best_epoch', '?')}) |",
        f"| Stopped early by the user | {'yes' if metrics.get('stopped') else 'no'} |",
        f"| Optimizer | {train_config.get('optimizer', '?')}, learning rate {train_config.get('lr', '?')}, "
        f"batch size {train_config.get('batch_size', '?')} |",
        f"| Training time | {_format_seconds(metrics.get('train_seconds'))} |",
        "",
        "## Metrics",
        "",
        "| Split | Top-1 | Top-5 |",
        "| --- | --- | --- |",
        f"| Validation (best epoch) | {_format_percent(metrics.get('best_top1'))} | "
        f"{_format_percent(metrics.get('best_top5'))} |",
    ]
    if evaluation is not None:
        lines.append(
            f"| Evaluation (`evaluation.json`) | {_format_percent(evaluation.get('top1'))} | "
            f"{_format_percent(evaluation.get('top5'))} |"
        )
    lines.append("")

    if pretrained:
        lines += [
            "> **Scores are optimistic.** This model started from ImageNet-pretrained weights, and the Stanford Dogs "
            "photos were taken from ImageNet, so the pretraining has most likely seen these validation images. Compare "
            "it with models trained from scratch only with that in mind.",
            "",
        ]

    download_args = f"'{repo_id}'" + (f", subfolder='{subfolder}'" if subfolder else "")
    lines += [
        "## Use",
        "",
        "```python",
        "from dogbreeds.hub import download_run",
        "from dogbreeds.predict import Predictor",
        "",
        f"run = download_run({download_args})",
        "predictor = Predictor.from_run(run.run_dir)",
        "print(predictor.predict('dog.jpg', k=5))",
        "```",
        "",
        "Or paste the repo id into the Hub box of the dogbreeds app (`python app.py`).",
        "",
        f"## Classes ({len(class_names)})",
        "",
        ", ".join(class_names) if class_names else "(none listed in config.json)",
        "",
    ]
    return "\n".join(lines)


def push_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    path_in_repo: str | None = None,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
    api: Any | None = None,
) -> str:
    """Upload a run's files and a generated model card to a Hub model repo in one commit; return the commit URL."""
    from huggingface_hub import HfApi

    run_dir = Path(run_dir)
    repo_id = validate_repo_id(repo_id)
    _check_pushable(run_dir)
    subfolder = (path_in_repo or "").strip().strip("/") or None
    api = api if api is not None else HfApi(endpoint=endpoint, token=token)

    with tempfile.TemporaryDirectory(prefix="dogbreeds-push-") as staging_name:
        staging = Path(staging_name)
        target = staging / subfolder if subfolder else staging
        target.mkdir(parents=True, exist_ok=True)
        for filename in PUSH_FILES:
            if (run_dir / filename).is_file():
                _link_or_copy(run_dir / filename, target / filename)
        # The model card always sits at the repo root, where the Hub renders it.
        (staging / "README.md").write_text(build_model_card(run_dir, repo_id, subfolder=subfolder), encoding="utf-8")

        try:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id,
                repo_type="model",
                folder_path=staging,
                revision=revision,
                commit_message=commit_message or f"Upload {run_dir.name} with dogbreeds",
            )
        except Exception as error:  # noqa: BLE001 - Hub failures are translated, anything else re-raised
            raise _translate_push_error(error, repo_id, revision) from error

    url = str(getattr(info, "commit_url", "") or info)
    logger.info("Pushed %s to %s: %s", run_dir, repo_id, url)
    return url


def _translate_push_error(error: Exception, repo_id: str, revision: str | None) -> Exception:
    """Map an HfApi exception during a push to a HubError; return `error` itself when it is not a Hub failure."""
    from huggingface_hub.errors import HfHubHTTPError

    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, HfHubHTTPError) and status in (401, 403):
        return HubError(
            "server_error",
            f"The Hub rejected the push to {repo_id!r} with HTTP {status}: {error}. Log in with `hf auth login` or set "
            "HF_TOKEN to a token with write access to that repo or its owner.",
            repo_id=repo_id,
            revision=revision,
            detail=str(status),
        )
    if isinstance(error, HfHubHTTPError):
        return HubError(
            "server_error",
            f"The push to {repo_id!r} failed with HTTP {status}: {error}. Try again later.",
            repo_id=repo_id,
            revision=revision,
            detail=str(status),
        )
    if _is_network_error(error):
        return HubError(
            "offline",
            f"Could not reach the Hub to push to {repo_id!r}: {error}. Check the network connection.",
            repo_id=repo_id,
            revision=revision,
            detail=str(error),
        )
    return error


def _check_pushable(run_dir: Path) -> None:
    """Raise HubError(kind="invalid_run") unless `run_dir` contains a readable run."""
    if not run_dir.is_dir():
        raise HubError(
            "invalid_run",
            f"Run folder {str(run_dir)!r} not found. Pass a folder under checkpoints/ written by "
            "`python -m dogbreeds.train`.",
        )
    missing = [name for name in REQUIRED_FILES if not (run_dir / name).is_file()]
    if missing:
        raise HubError(
            "invalid_run",
            f"Run folder {str(run_dir)!r} lacks {', '.join(missing)}; expected a finished or stopped training run. "
            "Train one with `python -m dogbreeds.train`.",
        )

    from dogbreeds.checkpoint import CheckpointError, read_run_config

    try:
        read_run_config(run_dir)
    except (CheckpointError, OSError, ValueError) as error:
        raise HubError(
            "invalid_run",
            f"Run folder {str(run_dir)!r} has an unreadable config.json: {error} Push a folder written by "
            "`python -m dogbreeds.train`.",
            filename="config.json",
            detail=str(error),
        ) from error


def _link_or_copy(source: Path, destination: Path) -> None:
    """Hard-link `source` (no copy of large weights) or copy it when the file systems differ."""
    try:
        destination.hardlink_to(source)
    except OSError:
        shutil.copy2(source, destination)


def _read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object from `path`."""
    with path.open(encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise HubError("invalid_run", f"{path} contains a JSON {type(data).__name__}; expected an object. Re-save the run folder.")
    return data


def _format_int(value: Any) -> str:
    return f"{int(value):,}" if isinstance(value, (int, float)) else "?"


def _format_list(values: Any) -> str:
    if not isinstance(values, (list, tuple)):
        return "?"
    return "(" + ", ".join(f"{float(value):.3f}" for value in values) + ")"


def _format_percent(value: Any) -> str:
    return f"{100.0 * float(value):.2f} %" if isinstance(value, (int, float)) else "n/a"


def _format_seconds(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "?"
    minutes, seconds = divmod(int(round(value)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {seconds:02d} s" if hours else f"{minutes} min {seconds:02d} s"


# ---------------------------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    """Build the `python -m dogbreeds.hub` argument parser."""
    parser = argparse.ArgumentParser(prog="python -m dogbreeds.hub", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    push = commands.add_parser("push", help="upload a run folder and a generated model card to a Hub model repo")
    push.add_argument("run_dir", type=Path, help="run folder, for example checkpoints/custom_cnn-20250101-120000")
    push.add_argument("repo_id", help="Hub model repo, 'owner/name'; created if missing")
    push.add_argument("--path-in-repo", default=None, help="subfolder in the repo for the run files (default: root)")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    push.add_argument("--token", default=None, help="Hub token with write access (default: HF_TOKEN or the login)")
    push.add_argument("--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")

    download = commands.add_parser("download", help="download a run into the Hugging Face cache and print its folder")
    download.add_argument("repo_id", help="Hub model repo, 'owner/name'")
    download.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    download.add_argument("--subfolder", default=None, help="subfolder that contains the run files")
    download.add_argument("--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "push":
            url = push_run(
                args.run_dir,
                args.repo_id,
                path_in_repo=args.path_in_repo,
                private=args.private,
                revision=args.revision,
                token=args.token,
                endpoint=args.endpoint,
            )
            print(url)
        else:
            run = download_run(args.repo_id, revision=args.revision, subfolder=args.subfolder, endpoint=args.endpoint)
            print(run.run_dir)
    except HubError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
