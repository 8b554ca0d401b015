"""Evaluate a trained run on a folder of breed images: accuracy, confusion matrix and the worst mistakes.

`python -m dogbreeds.evaluate RUN_DIR DATA_DIR` writes evaluation.json and confusion_matrix.png into RUN_DIR and
prints a short report. When DATA_DIR is the folder the run was trained on, only the run's validation split is
evaluated (recomputed from the saved seed and validation fraction), because the other images were trained on.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dogbreeds.checkpoint import CONFUSION_MATRIX_FILE, EVALUATION_FILE, atomic_write_bytes, atomic_write_json
from dogbreeds.checkpoint import load_model
from dogbreeds.cli import EXIT_CODES_EPILOG, EXIT_FAILURE, EXIT_USAGE, SPELLING_EPILOG, add_option
from dogbreeds.runtime import PRECISIONS

# Named explicitly because `python -m dogbreeds.evaluate` runs this file as __main__, outside the package's
# logger hierarchy that setup_logging() configures.
logger = logging.getLogger("dogbreeds.evaluate")

# Class names label the confusion-matrix axes up to this many classes; beyond it they would overlap.
MAX_LABELLED_CLASSES = 30
# Cells show their counts up to this many classes.
MAX_ANNOTATED_CLASSES = 15

TOP_CONFUSED_PAIRS = 10
TOP_WORST_FILES = 10


@dataclass
class EvaluationSet:
    """The images to evaluate, labelled with the run's class numbers, and a sentence on where they come from."""

    images: Any                 # data.ImageSet
    source: str                 # "validation split" or "folder"
    description: str


def evaluate(
    run_dir: Path | str,
    data_dir: Path | str,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    max_images: int | None = None,
    workers: int | None = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """Evaluate the best weights of `run_dir` on `data_dir` and write evaluation.json and confusion_matrix.png.

    Returns the report: top1, top5 and loss, the confusion matrix (rows: true class, columns: predicted),
    per_class accuracy, most_confused class pairs and the misclassified worst_files with the highest loss.
    Accuracies are fractions in [0, 1]. `max_images` evaluates a class-stratified sample of that many images.
    `precision` is as in training (runtime.resolve_precision), so the figures match the run's validation.
    Raises CheckpointError for an unreadable run folder and the data layer's errors for an unusable data folder.
    """
    from dogbreeds.runtime import resolve_device, resolve_precision

    run_dir = Path(run_dir)
    data_dir = Path(data_dir)
    if batch_size < 1:
        raise ValueError(f"Batch size must be at least 1, got {batch_size}.")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be at least 1 or None for all images, got {max_images}.")

    torch_device = resolve_device(device)
    autocast_dtype = resolve_precision(precision, torch_device)
    model, config = load_model(run_dir, device=torch_device)
    evaluation_set = select_evaluation_set(config, data_dir, max_images=max_images, workers=workers)
    logger.info("Evaluating %s on %s", run_dir, evaluation_set.description)

    logits, labels, positions = predict_images(model, evaluation_set.images, config["image_size"], torch_device,
                                               batch_size=batch_size, workers=workers, autocast_dtype=autocast_dtype)
    paths = [evaluation_set.images.paths[position] for position in positions.tolist()]
    report = summarize_predictions(logits, labels, paths, config["class_keys"], config["class_names"])

    report.update({
        "run_dir": str(run_dir),
        "architecture": config["architecture"],
        "data_dir": str(data_dir),
        "source": evaluation_set.source,
        "description": evaluation_set.description,
        "device": str(torch_device),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })

    atomic_write_json(run_dir / EVALUATION_FILE, report)
    title = f"{config['architecture']}: top-1 {100 * report['top1']:.1f}% on {report['num_images']} images"
    atomic_write_bytes(run_dir / CONFUSION_MATRIX_FILE,
                       render_confusion_matrix(np.asarray(report["confusion"]), config["class_names"], title))
    # Debug level, because the command line prints the same fact in its report.
    logger.debug("Wrote %s and %s in %s", EVALUATION_FILE, CONFUSION_MATRIX_FILE, run_dir)
    return report


def select_evaluation_set(config: dict[str, Any], data_dir: Path, *, max_images: int | None = None,
                          workers: int | None = None) -> EvaluationSet:
    """Choose the images to evaluate: the run's validation split of its training folder, or all of `data_dir`."""
    from dogbreeds.split import same_folder

    train_config = config.get("train_config") or {}
    trained_on = train_config.get("train_dir")
    is_training_folder = trained_on is not None and same_folder(data_dir, trained_on)

    if is_training_folder and not train_config.get("test_dir"):
        evaluation_set = _validation_split(config, data_dir, workers)
    else:
        if is_training_folder:
            logger.warning("Run %s validated on a separate folder, so every image in %s was trained on; the "
                           "accuracy below overstates accuracy on new photos", config.get("architecture"), data_dir)
        evaluation_set = _whole_folder(config, data_dir)

    if max_images is not None and max_images < len(evaluation_set.images):
        evaluation_set = _sample(evaluation_set, max_images, int(train_config.get("seed", 0)))
    return evaluation_set


def _validation_split(config: dict[str, Any], data_dir: Path, workers: int | None) -> EvaluationSet:
    """Recompute the run's split with its saved settings and return the validation side."""
    from dogbreeds.data import DataSettings, prepare_data

    train_config = config["train_config"]
    settings = DataSettings(
        train_dir=data_dir,
        image_size=config["image_size"],
        val_fraction=float(train_config.get("val_fraction", 0.2)),
        seed=int(train_config.get("seed", 0)),
        use_cache=bool(train_config.get("use_cache", True)),
        cache_dir=Path(train_config.get("cache_dir") or ".cache/dogbreeds"),
        workers=workers,
        split_lists=Path(train_config["split_lists"]) if train_config.get("split_lists") else None,
        max_images=train_config.get("max_images"),
    )
    data = prepare_data(settings)

    if list(data.class_keys) != list(config["class_keys"]):
        raise ValueError(
            f"The classes in {data_dir} ({len(data.class_keys)}) no longer match the {len(config['class_keys'])} "
            f"classes the run was trained on, so its validation split cannot be recomputed. Evaluate on a "
            f"separate folder of the run's classes instead."
        )

    description = (
        f"the run's validation split of its training folder {data_dir} ({len(data.val)} images not used for "
        f"training)"
    )
    return EvaluationSet(data.val, "validation split", description)


def _whole_folder(config: dict[str, Any], data_dir: Path) -> EvaluationSet:
    """Scan every image in `data_dir` and label it with the run's class numbers, matched by folder name."""
    from dogbreeds.data import ImageSet
    from dogbreeds.folders import ImageIndex, scan_image_folder
    from dogbreeds.split import match_test_classes
    from dogbreeds.transforms import resize_size

    trained_on = (config.get("train_config") or {}).get("train_dir") or "the training folder"
    run_classes = ImageIndex(root=Path(trained_on), class_keys=list(config["class_keys"]),
                             class_names=list(config["class_names"]), paths=[], labels=[])
    index = match_test_classes(run_classes, scan_image_folder(data_dir))

    images = ImageSet(paths=list(index.paths), labels=list(index.labels), side=resize_size(config["image_size"]))
    present = len(set(index.labels))
    description = (f"all {len(images)} images of {index.root} ({present} of the run's {len(config['class_keys'])} "
                   f"classes, matched by folder name)")
    return EvaluationSet(images, "folder", description)


def _sample(evaluation_set: EvaluationSet, count: int, seed: int) -> EvaluationSet:
    """Keep a class-stratified sample of `count` images."""
    from dogbreeds.data import ImageSet, stratified_sample

    images = evaluation_set.images
    positions = stratified_sample(images.labels, count, np.random.default_rng([seed, 11]))
    sampled = ImageSet(
        paths=[images.paths[i] for i in positions],
        labels=[images.labels[i] for i in positions],
        side=images.side,
        cache=images.cache,
        rows=[images.rows[i] for i in positions] if images.cache is not None else None,
    )
    description = f"{len(sampled)} images sampled evenly across classes from {evaluation_set.description}"
    return EvaluationSet(sampled, evaluation_set.source, description)


@torch.inference_mode()
def predict_images(model: nn.Module, images: Any, image_size: int, device: torch.device, *, batch_size: int = 64,
                   workers: int | None = None,
                   autocast_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return float32 logits [N, C], labels [N] and positions into `images` [N], on the CPU.

    Uses the validation preprocessing of training (BatchLoader with train=False) and autocast to
    `autocast_dtype` (None: float32). Files that fail to decode are skipped with a warning, so N can be smaller
    than len(images).
    """
    from dogbreeds.data import BatchLoader, prefetch_in_thread
    from dogbreeds.models import wants_channels_last
    from dogbreeds.runtime import autocast

    loader = BatchLoader(images, batch_size, train=False, image_size=image_size, workers=workers,
                         prefetch=prefetch_in_thread(device), with_indices=True)
    memory_format = torch.channels_last if wants_channels_last(model) else torch.contiguous_format
    model.eval()

    all_logits, all_labels, all_positions = [], [], []
    for batch, labels, positions in loader:
        batch = batch.to(device, memory_format=memory_format)
        with autocast(device, autocast_dtype):
            logits = model(batch)
        all_logits.append(logits.float().cpu())
        all_labels.append(labels)
        all_positions.append(positions)

    if not all_logits:
        raise ValueError("None of the evaluation images could be decoded, so there is nothing to evaluate.")
    return torch.cat(all_logits), torch.cat(all_labels), torch.cat(all_positions)


def summarize_predictions(logits: torch.Tensor, labels: torch.Tensor, paths: Sequence[Path],
                          class_keys: Sequence[str], class_names: Sequence[str]) -> dict[str, Any]:
    """Compute accuracy, loss, the confusion matrix, per-class accuracy, confused pairs and the worst mistakes."""
    num_classes = len(class_keys)
    losses = nn.functional.cross_entropy(logits, labels, reduction="none")
    probabilities = logits.softmax(dim=1)
    top = logits.topk(min(5, num_classes), dim=1).indices
    predicted = top[:, 0]

    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)

    count = int(labels.numel())
    return {
        "num_images": count,
        "num_classes": num_classes,
        "top1": float((predicted == labels).float().mean()),
        "top5": float((top == labels.unsqueeze(1)).any(dim=1).float().mean()),
        "loss": float(losses.mean()),
        "class_keys": list(class_keys),
        "class_names": list(class_names),
        "confusion": confusion.tolist(),
        "per_class": _per_class(confusion, class_keys, class_names),
        "most_confused": _most_confused(confusion, class_keys, class_names),
        "worst_files": _worst_files(losses, probabilities, labels, predicted, paths, class_names),
    }


def _per_class(confusion: torch.Tensor, class_keys: Sequence[str],
               class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Return one entry per class; accuracy is None for a class without images."""
    rows = []
    for label, (key, name) in enumerate(zip(class_keys, class_names)):
        images = int(confusion[label].sum())
        correct = int(confusion[label, label])
        rows.append({
            "class_key": key,
            "class_name": name,
            "images": images,
            "correct": correct,
            "accuracy": correct / images if images else None,
        })
    return rows


def _most_confused(confusion: torch.Tensor, class_keys: Sequence[str], class_names: Sequence[str],
                   limit: int = TOP_CONFUSED_PAIRS) -> list[dict[str, Any]]:
    """Return the (true, predicted) pairs of different classes with the most images, most first."""
    off_diagonal = confusion.clone()
    off_diagonal.fill_diagonal_(0)
    counts, flat = off_diagonal.flatten().sort(descending=True, stable=True)

    pairs = []
    num_classes = len(class_keys)
    for count, index in zip(counts.tolist()[:limit], flat.tolist()[:limit]):
        if count == 0:
            break
        true, predicted = divmod(index, num_classes)
        pairs.append({
            "true_key": class_keys[true],
            "true": class_names[true],
            "predicted_key": class_keys[predicted],
            "predicted": class_names[predicted],
            "count": count,
            "fraction_of_true": count / int(confusion[true].sum()),
        })
    return pairs


def _worst_files(losses: torch.Tensor, probabilities: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor,
                 paths: Sequence[Path], class_names: Sequence[str],
                 limit: int = TOP_WORST_FILES) -> list[dict[str, Any]]:
    """Return the misclassified files with the highest cross-entropy loss, highest first."""
    wrong = (predicted != labels).nonzero().flatten()
    order = wrong[losses[wrong].argsort(descending=True, stable=True)][:limit]

    worst = []
    for position in order.tolist():
        true, guess = int(labels[position]), int(predicted[position])
        worst.append({
            "path": str(paths[position]),
            "true": class_names[true],
            "predicted": class_names[guess],
            "loss": float(losses[position]),
            "true_probability": float(probabilities[position, true]),
            "predicted_probability": float(probabilities[position, guess]),
        })
    return worst


def render_confusion_matrix(confusion: np.ndarray, class_names: Sequence[str], title: str) -> bytes:
    """Draw the confusion matrix, each row scaled to the fraction of its true class, and return PNG bytes.

    Class names label the axes for up to MAX_LABELLED_CLASSES classes; larger matrices show class numbers only.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A Figure with its own Agg canvas leaves pyplot's global backend alone, which the app may be using.
    num_classes = len(class_names)
    totals = confusion.sum(axis=1, keepdims=True)
    fractions = np.divide(confusion, totals, out=np.zeros(confusion.shape, dtype=float), where=totals > 0)

    labelled = num_classes <= MAX_LABELLED_CLASSES
    side = min(14.0, max(6.0, 0.3 * num_classes + 3.0)) if labelled else 10.0
    figure = Figure(figsize=(side + 1.5, side), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()

    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")
    axes.set_title(title)
    axes.set_xlabel("predicted breed")
    axes.set_ylabel("true breed")

    if labelled:
        axes.set_xticks(range(num_classes), labels=class_names, rotation=90, fontsize=8)
        axes.set_yticks(range(num_classes), labels=class_names, fontsize=8)
    else:
        axes.set_xlabel(f"predicted breed (class number, 0-{num_classes - 1})")
        axes.set_ylabel(f"true breed (class number, 0-{num_classes - 1})")

    if num_classes <= MAX_ANNOTATED_CLASSES:
        for true in range(num_classes):
            for predicted in range(num_classes):
                if confusion[true, predicted]:
                    colour = "white" if fractions[true, predicted] > 0.5 else "black"
                    axes.text(predicted, true, str(int(confusion[true, predicted])), ha="center", va="center",
                              fontsize=8, color=colour)

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def format_report(report: dict[str, Any], weakest: int = 5, rows: int = 5) -> str:
    """Format the short text report printed by the command line."""
    lines = [
        f"Evaluated {report['run_dir']} on {report['description']}.",
        f"top-1 {100 * report['top1']:.2f}%   top-5 {100 * report['top5']:.2f}%   loss {report['loss']:.4f}   "
        f"({report['num_images']} images, {report['num_classes']} classes)",
    ]

    scored = [row for row in report["per_class"] if row["accuracy"] is not None]
    scored.sort(key=lambda row: (row["accuracy"], row["class_name"]))
    if scored:
        lines.append("Weakest breeds:")
        lines.extend(f"  {100 * row['accuracy']:6.2f}%  {row['class_name']} ({row['correct']}/{row['images']})"
                     for row in scored[:weakest])

    if report["most_confused"]:
        lines.append("Most confused (true -> predicted):")
        lines.extend(f"  {pair['count']:4d}  {pair['true']} -> {pair['predicted']} "
                     f"({100 * pair['fraction_of_true']:.0f}% of {pair['true']})"
                     for pair in report["most_confused"][:rows])

    if report["worst_files"]:
        lines.append("Highest-loss mistakes:")
        lines.extend(f"  loss {item['loss']:7.3f}  {item['path']}  true {item['true']}, predicted {item['predicted']}"
                     for item in report["worst_files"][:rows])

    lines.append(f"Saved {EVALUATION_FILE} and {CONFUSION_MATRIX_FILE} in {report['run_dir']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Build the `python -m dogbreeds.evaluate` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds.evaluate",
        description="Evaluate a trained run on a folder of breed images and save evaluation.json and "
                    "confusion_matrix.png in the run folder. Given the run's own training folder, only its "
                    "validation split is evaluated.",
        epilog=f"{SPELLING_EPILOG} {EXIT_CODES_EPILOG}",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder written by dogbreeds.train")
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR",
                        help="folder with one subfolder of images per breed, named as in training")
    add_option(parser, "batch_size", type=int, default=64, metavar="N",
               help="images per forward pass (default: 64)")
    add_option(parser, "device", default="cpu", metavar="NAME",
               help="auto, cpu, cuda, cuda:N or mps (default: cpu)")
    add_option(parser, "precision", choices=PRECISIONS, default="auto",
               help="fp32, or bf16 autocast; auto uses bf16 on GPUs and AMX CPUs, like training (default: auto)")
    add_option(parser, "max_images", type=int, default=None, metavar="N",
               help="evaluate a sample of N images, spread evenly across breeds (default: all)")
    add_option(parser, "workers", type=int, default=None, metavar="N",
               help="image decoding processes (default: chosen from the CPU count)")
    return parser


def _check_paths(run_dir: Path, data_dir: Path) -> str | None:
    """Return an error message when RUN_DIR or DATA_DIR is missing, with a hint when they look swapped."""
    from dogbreeds.checkpoint import CONFIG_FILE

    swap_hint = " The run folder comes first: python -m dogbreeds.evaluate RUN_DIR DATA_DIR"
    if not (run_dir / CONFIG_FILE).is_file():
        looks_swapped = (data_dir / CONFIG_FILE).is_file() or _has_image_subfolder(run_dir)
        message = f"Run folder {run_dir} has no {CONFIG_FILE}, or does not exist."
        return message + (swap_hint if looks_swapped else " Pass the folder of a run written by dogbreeds.train.")
    if not data_dir.is_dir():
        return f"Data folder {data_dir} not found. Pass a folder with one subfolder of images per breed."
    return None


def _has_image_subfolder(folder: Path) -> bool:
    """Return True when `folder` has a subfolder, or a subfolder one level deeper, that contains an image file."""
    from dogbreeds.folders import IMAGE_EXTENSIONS

    if not folder.is_dir():
        return False
    for pattern in ("*/*", "*/*/*"):
        if any(path.suffix.lower() in IMAGE_EXTENSIONS for path in folder.glob(pattern)):
            return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation command line; return 0 on success, 1 for a failure while evaluating, 2 for bad arguments."""
    from dogbreeds.checkpoint import CheckpointError
    from dogbreeds.runtime import configure_allocator, setup_logging

    configure_allocator()
    setup_logging()
    parser = build_parser()
    options = parser.parse_args(argv)
    if options.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {options.batch_size}.")
    if options.max_images is not None and options.max_images < 1:
        parser.error(f"--max-images must be at least 1, got {options.max_images}.")
    path_error = _check_paths(options.run_dir, options.data_dir)
    if path_error is not None:
        print(f"error: {path_error}", file=sys.stderr)
        return EXIT_USAGE

    try:
        report = evaluate(options.run_dir, options.data_dir, batch_size=options.batch_size, device=options.device,
                          max_images=options.max_images, workers=options.workers, precision=options.precision)
    except (CheckpointError, ValueError, OSError) as error:
        logger.debug("Evaluation failed", exc_info=True)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE

    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
