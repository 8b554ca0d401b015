"""Train (or reuse) every architecture on one data set and write a side-by-side comparison.

`python -m dogbreeds.compare DATA_DIR` trains custom_cnn, resnet18 and resfcn18 with the same settings, or reuses
a finished run in --out whose settings match, then writes comparison.md, comparison.csv and
comparison_curves.png (loss and validation top-1 per epoch) into --out.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import logging
import signal
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dogbreeds.config import RUN_DEFINING_FIELDS, TrainConfig
from dogbreeds.runtime import PRECISIONS

# Named explicitly because `python -m dogbreeds.compare` runs this file as __main__, outside the package's
# logger hierarchy that setup_logging() configures.
logger = logging.getLogger("dogbreeds.compare")

MARKDOWN_FILE = "comparison.md"
CSV_FILE = "comparison.csv"
CURVES_FILE = "comparison_curves.png"

# A reused run must match on these settings as well as on the data folder.
MATCHED_FIELDS = (*RUN_DEFINING_FIELDS, "epochs", "patience", "test_dir")

DEFAULT_LATENCY_IMAGES = 5

CSV_COLUMNS = (
    "architecture", "family", "parameters", "flops_per_image", "image_size", "epochs", "best_epoch", "best_top1",
    "best_top5", "train_seconds", "images_per_s", "latency_ms", "reused", "run_dir",
)


def find_matching_run(out: Path, config: TrainConfig) -> Path | None:
    """Return the newest finished run in `out` trained with the same data and settings as `config`, if any.

    `config` must be resolved (image size and learning rate filled in), as fit() stores it.
    """
    from dogbreeds.checkpoint import CheckpointError, list_runs, read_run_config

    requested = config.to_dict()
    for summary in list_runs(out):
        try:
            saved = read_run_config(summary.run_dir)
        except CheckpointError:
            continue

        train_config = saved.get("train_config") or {}
        metrics = saved.get("metrics") or {}
        if not metrics.get("finished") or not summary.has_weights:
            continue
        if _same_settings(train_config, requested):
            return summary.run_dir
    return None


def _same_settings(saved: dict[str, Any], requested: dict[str, Any]) -> bool:
    from dogbreeds.split import same_folder

    if not saved.get("train_dir") or not same_folder(saved["train_dir"], requested["train_dir"]):
        return False

    for name in MATCHED_FIELDS:
        saved_value, requested_value = saved.get(name), requested.get(name)
        if name in ("test_dir", "split_lists") and saved_value and requested_value:
            if not same_folder(saved_value, requested_value):
                return False
        elif saved_value != requested_value:
            return False
    return True


def measure_latency(run_dir: Path, image_paths: Sequence[Path], device: str) -> float | None:
    """Return the median milliseconds of Predictor.predict_timed over `image_paths`, after one warm-up call."""
    from dogbreeds.predict import Predictor

    if not image_paths:
        return None

    predictor = Predictor.from_run(run_dir, device=device)
    predictor.predict(image_paths[0])
    timings = [predictor.predict_timed(path)[1] for path in image_paths]
    return statistics.median(timings)


def latency_sample(data_dir: Path, count: int) -> list[Path]:
    """Pick `count` image files spread evenly over the sorted file list of `data_dir` (so over the breeds)."""
    from dogbreeds.folders import scan_image_folder

    paths = scan_image_folder(data_dir).paths
    if count <= 0 or not paths:
        return []
    step = max(1, len(paths) // count)
    return list(paths[::step][:count])


def summarize_run(run_dir: Path, reused: bool, latency_ms: float | None) -> dict[str, Any]:
    """Collect one table row from a run folder's config.json and history.json."""
    from dogbreeds.checkpoint import read_history, read_run_config

    config = read_run_config(run_dir)
    metrics = config.get("metrics") or {}
    history = read_history(run_dir)
    speeds = [entry["images_per_s"] for entry in history if entry.get("images_per_s")]

    return {
        "architecture": config["architecture"],
        "family": config["family"],
        "parameters": config.get("parameters"),
        "flops_per_image": config.get("flops_per_image"),
        "image_size": config["image_size"],
        "epochs": metrics.get("epochs_completed", len(history)),
        "best_epoch": metrics.get("best_epoch"),
        "best_top1": metrics.get("best_top1"),
        "best_top5": metrics.get("best_top5"),
        "train_seconds": metrics.get("train_seconds"),
        "images_per_s": statistics.mean(speeds) if speeds else None,
        "latency_ms": latency_ms,
        "reused": reused,
        "run_dir": str(run_dir),
        "history": history,
    }


def compare(
    data_dir: Path,
    archs: Sequence[str],
    base: TrainConfig,
    *,
    image_size: int | None = None,
    retrain: bool = False,
    latency_images: int = DEFAULT_LATENCY_IMAGES,
    on_event: Callable[[Any], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[dict[str, Any]]:
    """Train or reuse one run per architecture and return the table rows, in `archs` order.

    Every run uses `base` with its architecture and image size replaced (`image_size` for all, else each
    architecture's default). Returns the rows finished so far when should_stop ends a training run.
    """
    from dogbreeds.runtime import resolve_device
    from dogbreeds.trainer import fit

    configs = []
    for arch in archs:
        config = dataclasses.replace(base, train_dir=Path(data_dir), arch=arch, image_size=image_size,
                                     run_name=None, resume=None)
        config.validate()
        configs.append(config.resolved())

    device = str(resolve_device(base.device))
    sample = latency_sample(Path(data_dir), latency_images)
    rows = []
    for config in configs:
        run_dir = None if retrain else find_matching_run(config.out, config)
        reused = run_dir is not None
        if reused:
            logger.info("Reusing %s for %s (same data and settings)", run_dir, config.arch)
        else:
            result = fit(config, on_event=on_event, should_stop=should_stop)
            if result.stopped:
                logger.warning("Comparison stopped during %s; the table is not written", config.arch)
                return rows
            run_dir = result.run_dir

        rows.append(summarize_run(run_dir, reused, measure_latency(run_dir, sample, device)))
    return rows


def format_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Format the rows as a Markdown table with units in the header."""
    header = ("| Architecture | Family | Parameters | FLOPs per image | Image size (px) | Epochs | Best top-1 | "
              "Best top-5 | Training time (s) | Images/s | Prediction latency (ms) | Run |")
    lines = [header, _separator(header)]
    for row in rows:
        cells = [
            row["architecture"],
            row["family"],
            _millions(row["parameters"]),
            _flops(row["flops_per_image"]),
            str(row["image_size"]),
            str(row["epochs"]),
            _percent(row["best_top1"]),
            _percent(row["best_top5"]),
            _number(row["train_seconds"], 0),
            _number(row["images_per_s"], 1),
            _number(row["latency_ms"], 1),
            f"`{Path(row['run_dir']).name}`" + (" (reused)" if row["reused"] else ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _separator(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1)


def _millions(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:.2f} M"


def _flops(value: int | None) -> str:
    if value is None:
        return "n/a"
    if value >= 1e9:
        return f"{value / 1e9:.2f} G"
    return f"{value / 1e6:.1f} M"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _number(value: float | None, decimals: int) -> str:
    return "n/a" if value is None else f"{value:.{decimals}f}"


def format_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Format the rows as CSV with raw numbers (accuracies as fractions, times in seconds and milliseconds)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in CSV_COLUMNS})
    return buffer.getvalue()


def render_curves(rows: Sequence[dict[str, Any]]) -> bytes:
    """Plot training and validation loss and validation top-1 per epoch for every row; return PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A Figure with its own Agg canvas leaves pyplot's global backend alone, which the app may be using.
    figure = Figure(figsize=(12, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    loss_axes, accuracy_axes = figure.subplots(1, 2)

    for index, row in enumerate(rows):
        colour = f"C{index}"
        epochs = [entry["epoch"] for entry in row["history"]]
        loss_axes.plot(epochs, [entry["train_loss"] for entry in row["history"]], color=colour, linestyle="--",
                       marker=".", label=f"{row['architecture']} train")
        loss_axes.plot(epochs, [entry["val_loss"] for entry in row["history"]], color=colour, marker="o",
                       label=f"{row['architecture']} validation")
        accuracy_axes.plot(epochs, [100 * entry["val_top1"] for entry in row["history"]], color=colour,
                           marker="o", label=row["architecture"])

    loss_axes.set_title("Loss per epoch")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("cross-entropy")
    loss_axes.legend(fontsize=8)
    accuracy_axes.set_title("Validation top-1 per epoch")
    accuracy_axes.set_xlabel("epoch")
    accuracy_axes.set_ylabel("top-1 (%)")
    accuracy_axes.legend(fontsize=8)
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_comparison(rows: Sequence[dict[str, Any]], folder: Path) -> dict[str, Path]:
    """Write comparison.md, comparison.csv and comparison_curves.png into `folder`, each atomically."""
    from dogbreeds.checkpoint import atomic_write_bytes

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": folder / MARKDOWN_FILE, "csv": folder / CSV_FILE, "curves": folder / CURVES_FILE}
    atomic_write_bytes(paths["markdown"], format_markdown(rows).encode("utf-8"))
    atomic_write_bytes(paths["csv"], format_csv(rows).encode("utf-8"))
    atomic_write_bytes(paths["curves"], render_curves(rows))
    return paths


def build_parser() -> argparse.ArgumentParser:
    """Build the `python -m dogbreeds.compare` parser; training options are shared with dogbreeds.train."""
    from dogbreeds.models import MODEL_NAMES
    from dogbreeds.train import add_option

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds.compare",
        description="Train every architecture on one data set with the same settings (or reuse matching "
                    "finished runs in --out) and write a side-by-side table and loss curves.",
        epilog="Options with several words accept both spellings, for example --batch-size and --batch_size.",
    )
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR",
                        help="folder with one subfolder of images per breed")
    add_option(parser, "arch", nargs="+", choices=MODEL_NAMES, metavar="ARCH",
                help=f"architectures to compare (default: all of {', '.join(MODEL_NAMES)})")
    add_option(parser, "epochs", type=int, metavar="N", help=f"epochs per run (default: {defaults.epochs})")
    add_option(parser, "image_size", type=int, metavar="PX",
                help="input side in pixels for every architecture (default: each architecture's own)")
    add_option(parser, "out", type=Path, metavar="DIR",
                help=f"folder of the run folders and the comparison files (default: {defaults.out})")
    add_option(parser, "retrain", action="store_true",
                help="train every architecture again even when a matching finished run exists")
    add_option(parser, "latency_images", type=int, metavar="N",
                help=f"images timed for the prediction latency (default: {DEFAULT_LATENCY_IMAGES})")

    training = parser.add_argument_group("training options passed to every run (see python -m dogbreeds.train)")
    for name, kwargs in (
        ("batch_size", {"type": int, "metavar": "N"}),
        ("lr", {"type": float, "metavar": "LR"}),
        ("optimizer", {"choices": ("sgd", "adamw")}),
        ("momentum", {"type": float, "metavar": "M"}),
        ("weight_decay", {"type": float, "metavar": "WD"}),
        ("warmup_epochs", {"type": float, "metavar": "E"}),
        ("label_smoothing", {"type": float, "metavar": "F"}),
        ("patience", {"type": int, "metavar": "N"}),
        ("seed", {"type": int, "metavar": "N"}),
        ("device", {"metavar": "NAME"}),
        ("precision", {"choices": PRECISIONS}),
        ("workers", {"type": int, "metavar": "N"}),
        ("test_dir", {"type": Path, "metavar": "DIR"}),
        ("val_fraction", {"type": float, "metavar": "F"}),
        ("split_lists", {"type": Path, "metavar": "DIR"}),
        ("max_images", {"type": int, "metavar": "N"}),
        ("no_cache", {"dest": "use_cache", "action": "store_false"}),
        ("cache_dir", {"type": Path, "metavar": "DIR"}),
        ("min_scale", {"type": float, "metavar": "F"}),
        ("no_flip", {"dest": "hflip", "action": "store_false"}),
    ):
        add_option(training, name, help="as in dogbreeds.train", **kwargs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison command line and return the exit code (0, 1 for unusable data, 2 for bad options)."""
    from dogbreeds.models import MODEL_NAMES
    from dogbreeds.runtime import configure_allocator, setup_logging
    from dogbreeds.train import EXIT_DATA_ERROR, EXIT_INTERRUPTED, ProgressBars, StopFlag, user_error_types

    configure_allocator()
    setup_logging()
    parser = build_parser()
    given = vars(parser.parse_args(argv))

    data_dir = given.pop("data_dir")
    archs = list(dict.fromkeys(given.pop("arch", MODEL_NAMES)))
    image_size = given.pop("image_size", None)
    retrain = given.pop("retrain", False)
    latency_images = given.pop("latency_images", DEFAULT_LATENCY_IMAGES)
    base = TrainConfig(train_dir=data_dir, **given)

    if latency_images < 0:
        parser.error(f"--latency-images must be zero or positive, got {latency_images}.")
    for arch in archs:
        try:
            dataclasses.replace(base, arch=arch, image_size=image_size).validate()
        except ValueError as error:
            parser.error(f"{arch}: {error}")

    stop = StopFlag()
    previous_handler = signal.signal(signal.SIGINT, stop.handle)
    bars = ProgressBars()
    try:
        rows = compare(data_dir, archs, base, image_size=image_size, retrain=retrain,
                       latency_images=latency_images, on_event=bars, should_stop=stop)
    except user_error_types() as error:
        logger.debug("Comparison failed", exc_info=True)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_DATA_ERROR
    finally:
        bars.close()
        signal.signal(signal.SIGINT, previous_handler)

    if stop.requested:
        return EXIT_INTERRUPTED

    paths = write_comparison(rows, base.out)
    print(format_markdown(rows))
    print("Wrote " + ", ".join(str(path) for path in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
