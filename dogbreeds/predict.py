"""Top-k breed prediction for single images from a trained run folder.

Command line::

    python -m dogbreeds.predict RUN_DIR IMAGE [IMAGE ...] [--top-k 5] [--device cpu] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from dogbreeds import transforms
from dogbreeds.checkpoint import MODEL_FILE, CheckpointError, load_model
from dogbreeds.cli import EXIT_CODES_EPILOG, EXIT_FAILURE, EXIT_USAGE, SPELLING_EPILOG, add_option
from dogbreeds.decode import ImageDecodeError
from dogbreeds.models import count_parameters
from dogbreeds.runtime import resolve_device

logger = logging.getLogger(__name__)

ImageInput = str | Path | bytes | Image.Image | np.ndarray


class Predictor:
    """Trained classifier plus the exact evaluation preprocessing, ready to classify one image at a time."""

    def __init__(
        self, model: nn.Module, config: dict[str, Any], run_dir: Path | str, device: str | torch.device = "cpu"
    ) -> None:
        _check_normalization(config, Path(run_dir))

        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.run_dir = Path(run_dir)
        self.architecture: str = config["architecture"]
        self.family: str = config["family"]
        self.image_size: int = config["image_size"]
        self.class_keys: list[str] = list(config["class_keys"])
        self.class_names: list[str] = _unique_names(config["class_names"], self.class_keys)
        self.num_parameters: int = count_parameters(model)

    @classmethod
    def from_run(cls, run_dir: Path | str, device: str = "cpu", weights: str = MODEL_FILE) -> Predictor:
        """Load the model of a run folder, or of a Hub download that has just model.safetensors and config.json.

        ``device`` is a torch device name or ``"auto"`` (CUDA, then MPS, then CPU). A device this machine lacks
        raises ValueError.
        """
        resolved = _resolve_device(device)
        model, config = load_model(run_dir, device=resolved, weights=weights)
        return cls(model, config, run_dir, resolved)

    def preprocess(self, image: ImageInput) -> torch.Tensor:
        """Decode ``image`` and turn it into the normalized [1, 3, S, S] batch the evaluation loader would produce."""
        return transforms.preprocess_eval(image, self.image_size).unsqueeze(0)

    def probabilities(self, image: ImageInput) -> torch.Tensor:
        """Return the softmax probabilities over all classes for ``image``, as a float32 CPU tensor [num_classes]."""
        batch = self.preprocess(image).to(self.device)

        # eval() again in case a caller switched the shared model to training mode since the last prediction.
        self.model.eval()
        with torch.inference_mode():
            logits = self.model(batch)

        return torch.softmax(logits.float(), dim=1)[0].cpu()

    def predict(self, image: ImageInput, k: int = 5) -> dict[str, float]:
        """Return the ``k`` most likely breeds of ``image`` as {display name: probability}, most likely first.

        ``image`` is a file path, encoded bytes, a PIL image in any mode or a numpy array (HxW, HxWx1, HxWx3,
        HxWx4). ``k`` above the number of classes returns every class.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer; found {k!r}.")

        probabilities = self.probabilities(image)
        values, indices = probabilities.topk(min(k, len(self.class_names)))

        return {self.class_names[index]: float(value) for value, index in zip(values.tolist(), indices.tolist())}

    def predict_timed(self, image: ImageInput, k: int = 5) -> tuple[dict[str, float], float]:
        """Return the top-``k`` prediction and the milliseconds spent on decoding, preprocessing and the forward pass."""
        start = time.perf_counter()
        top = self.predict(image, k)
        milliseconds = (time.perf_counter() - start) * 1000.0
        return top, milliseconds


def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    # resolve_device raises a ValueError naming the available devices, where moving the model to a missing
    # device would fail with an AssertionError or a RuntimeError.
    return resolve_device(device)


def _unique_names(names: Sequence[str], keys: Sequence[str]) -> list[str]:
    # Two class folders can share a display name (for example "n1-Terrier" and "n2-Terrier"). The folder name is
    # appended so that the {name: probability} results never merge two classes.
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return [name if counts[name] == 1 else f"{name} ({key})" for name, key in zip(names, keys)]


def _check_normalization(config: dict[str, Any], run_dir: Path) -> None:
    normalization = config.get("normalization")
    if normalization is None:
        return

    expected = {"mean": transforms.IMAGENET_MEAN, "std": transforms.IMAGENET_STD}
    for key, values in expected.items():
        found = normalization.get(key) if isinstance(normalization, dict) else None
        matches = (
            isinstance(found, list)
            and len(found) == len(values)
            and all(isinstance(item, int | float) and math.isclose(item, value, abs_tol=1e-6)
                    for item, value in zip(found, values))
        )
        if not matches:
            raise CheckpointError(
                f"{run_dir / 'config.json'}: normalization {key} is {found!r}, but prediction applies the ImageNet "
                f"{key} {list(values)} used in training. Fix config.json or retrain the run."
            )


def format_prediction(top: dict[str, float], indent: str = "  ") -> str:
    """Format a top-k result as numbered lines with percentages, for terminals."""
    width = max((len(name) for name in top), default=0)
    lines = [f"{indent}{rank}. {name:<{width}}  {100.0 * probability:6.2f}%"
             for rank, (name, probability) in enumerate(top.items(), start=1)]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``python -m dogbreeds.predict``."""
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds.predict",
        description="Print the most likely dog breeds for each image, using a trained run folder.",
        epilog=f"{SPELLING_EPILOG} {EXIT_CODES_EPILOG} An image that cannot be read gives exit code 1.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="run folder with config.json and model.safetensors")
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files to classify")
    add_option(parser, "top_k", type=int, default=5, metavar="K",
               help="number of breeds to print per image (default: 5)")
    add_option(parser, "device", default="cpu", metavar="NAME",
               help="torch device: cpu, cuda, mps or auto (default: cpu)")
    add_option(parser, "weights", default=MODEL_FILE, metavar="FILE",
               help=f"weights file inside the run folder (default: {MODEL_FILE})")
    add_option(parser, "json", action="store_true", default=False, help="print one JSON object per image instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the prediction CLI; return 0 on success, 1 if loading the run or any image failed, 2 for bad arguments."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.top_k < 1:
        print(f"error: --top-k must be at least 1; found {args.top_k}.", file=sys.stderr)
        return EXIT_USAGE
    if not args.run_dir.is_dir():
        print(f"error: Run folder {args.run_dir} does not exist. Pass the folder of a trained run (it contains "
              f"config.json and {MODEL_FILE}).", file=sys.stderr)
        return EXIT_USAGE

    try:
        predictor = Predictor.from_run(args.run_dir, device=args.device, weights=args.weights)
    except (CheckpointError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE

    failures = 0
    for path in args.images:
        try:
            top, milliseconds = predictor.predict_timed(path, args.top_k)
        except ImageDecodeError as error:
            print(f"error: {error}", file=sys.stderr)
            failures += 1
            continue

        if args.json:
            print(json.dumps({"image": str(path), "top_k": top, "milliseconds": round(milliseconds, 2)},
                             ensure_ascii=False))
        else:
            print(f"{path}  ({milliseconds:.1f} ms)")
            print(format_prediction(top))

    return EXIT_FAILURE if failures else 0


if __name__ == "__main__":
    sys.exit(main())
