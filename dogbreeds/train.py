"""Command line training: `python -m dogbreeds.train --train_dir images/images --arch custom_cnn`.

Every option accepts both spellings, `--batch-size` and `--batch_size`. Under
`torchrun --nproc_per_node=N -m dogbreeds.train ...` each process trains one shard with DistributedDataParallel.
Exit codes: 0 finished (or stopped early by patience), 1 unusable data or run folder or a diverged loss,
2 invalid options (including a resumed run with no epochs left), 130 stopped with Ctrl-C (the last completed
epoch is kept).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from dogbreeds.cli import add_option
from dogbreeds.config import OPTIMIZERS, TrainConfig
from dogbreeds.runtime import PRECISIONS, configure_allocator, setup_logging

# Named explicitly because `python -m dogbreeds.train` runs this file as __main__, outside the package's
# logger hierarchy that setup_logging() configures.
logger = logging.getLogger("dogbreeds.train")

EXIT_DATA_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_DEFAULTS = TrainConfig()


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser; the help text names each option's unit and default."""
    from dogbreeds.models import DEFAULT_IMAGE_SIZE, MODEL_NAMES

    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds.train",
        description="Train a dog breed classifier on a folder with one subfolder of images per breed. Each "
                    "epoch writes the run folder OUT/RUN_NAME (weights, config.json, history).",
        epilog="Options with several words accept both spellings, for example --batch-size and --batch_size.",
    )
    sizes = ", ".join(f"{name} {size}" for name, size in DEFAULT_IMAGE_SIZE.items())

    data = parser.add_argument_group("data")
    add_option(data, "train_dir", type=Path, metavar="DIR",
                help=f"folder of breed subfolders, or a folder above it (default: {_DEFAULTS.train_dir})")
    add_option(data, "test_dir", type=Path, metavar="DIR",
                help="separate folder to validate on, classes matched by folder name; the training folder "
                     "itself means 'split it' (default: a split of --train_dir)")
    add_option(data, "val_fraction", type=float, metavar="F",
                help=f"fraction of each breed held out for validation, between 0 and 1 "
                     f"(default: {_DEFAULTS.val_fraction})")
    add_option(data, "split_lists", type=Path, metavar="DIR",
                help="folder with the official train_list.mat and test_list.mat; replaces the random split")
    add_option(data, "max_images", type=int, metavar="N",
                help="use at most N images, sampled evenly across breeds (default: all)")
    add_option(data, "image_size", type=int, metavar="PX",
                help=f"side of the square model input in pixels (default per architecture: {sizes})")
    add_option(data, "workers", type=int, metavar="N",
                help="processes that decode images and build batches (default: chosen from the CPU count)")
    add_option(data, "no_cache", dest="use_cache", action="store_false",
                help="decode the images again for every run instead of keeping a decoded cache on disk")
    add_option(data, "cache_dir", type=Path, metavar="DIR",
                help=f"folder for the decoded-image cache (default: {_DEFAULTS.cache_dir})")
    add_option(data, "min_scale", type=float, metavar="F",
                help=f"smallest random crop, as a fraction of the evaluation crop's area, in (0, 1]; "
                     f"1 trains on the evaluation crop itself (default: {_DEFAULTS.min_scale})")
    add_option(data, "no_flip", dest="hflip", action="store_false",
                help="turn off random horizontal flips")

    model = parser.add_argument_group("model and optimization")
    add_option(model, "arch", choices=MODEL_NAMES,
                help=f"architecture: custom_cnn and resnet18 are CNNs, resfcn18 is fully connected "
                     f"(default: {_DEFAULTS.arch})")
    add_option(model, "pretrained", action="store_true",
                help="start resnet18 from ImageNet weights (downloaded once into the torch hub cache)")
    add_option(model, "epochs", type=int, metavar="N", help=f"number of epochs (default: {_DEFAULTS.epochs})")
    add_option(model, "batch_size", type=int, metavar="N",
                help=f"images per step on each process (default: {_DEFAULTS.batch_size})")
    add_option(model, "optimizer", choices=OPTIMIZERS,
                help=f"sgd (with momentum) or adamw (default: {_DEFAULTS.optimizer})")
    add_option(model, "lr", type=float, metavar="LR",
                help="peak learning rate (default: sgd 0.05 per 64 images of global batch, adamw 0.001; a tenth "
                     "of that with --pretrained)")
    add_option(model, "momentum", type=float, metavar="M",
                help=f"SGD momentum (default: {_DEFAULTS.momentum})")
    add_option(model, "weight_decay", type=float, metavar="WD",
                help=f"weight decay of weight matrices and kernels (default: {_DEFAULTS.weight_decay})")
    add_option(model, "warmup_epochs", type=float, metavar="E",
                help=f"linear learning-rate warm-up in epochs before the cosine decay "
                     f"(default: {_DEFAULTS.warmup_epochs:g})")
    add_option(model, "label_smoothing", type=float, metavar="F",
                help=f"label smoothing of the training loss, in [0, 1) (default: {_DEFAULTS.label_smoothing})")
    add_option(model, "seed", type=int, metavar="N",
                help=f"seed of the split, initialization and augmentation (default: {_DEFAULTS.seed})")
    add_option(model, "patience", type=int, metavar="N",
                help="stop after N epochs without a better validation top-1 (default: train all epochs)")

    run = parser.add_argument_group("run")
    add_option(run, "device", metavar="NAME",
                help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps (default: auto)")
    add_option(run, "precision", choices=PRECISIONS,
                help="fp32, or bf16 autocast (float32 weights and loss); auto uses bf16 on GPUs that support it "
                     "and on CPUs with AMX, where it is much faster (default: auto)")
    add_option(run, "out", type=Path, metavar="DIR",
                help=f"folder that receives the run folders (default: {_DEFAULTS.out})")
    add_option(run, "run_name", metavar="NAME",
                help="name of the run folder (default: ARCH-YYYYmmdd-HHMMSS)")
    add_option(run, "resume", type=Path, metavar="RUN_DIR",
                help="continue this run folder after its last completed epoch; --epochs sets the new total")
    run.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser


def parse_config(argv: Sequence[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """Parse and validate the command line; invalid values end the program with exit code 2 before any I/O.

    Only the run folder's config.json is read, and only with --resume.
    """
    parser = build_parser()
    namespace = parser.parse_args(argv)
    explicit_options = {key: value for key, value in vars(namespace).items() if key != "verbose"}

    if "resume" in explicit_options:
        config = _resume_config(parser, explicit_options)
    else:
        config = TrainConfig(**explicit_options)

    try:
        config.validate()
    except ValueError as error:
        parser.error(str(error))
    return config, namespace


def _resume_config(parser: argparse.ArgumentParser, explicit_options: dict[str, Any]) -> TrainConfig:
    """Start from the saved run's settings and apply the options given on this command line."""
    from dogbreeds.checkpoint import CheckpointError, read_run_config
    from dogbreeds.config import RUN_DEFINING_FIELDS
    from dogbreeds.resume import check_epochs_left

    run_dir: Path = explicit_options["resume"]
    if not run_dir.is_dir():
        parser.error(f"--resume folder {run_dir} does not exist. Pass the folder of an earlier run, or leave out "
                     f"--resume to start a new run.")
    try:
        saved = TrainConfig.from_dict(read_run_config(run_dir)["train_config"])
    except (CheckpointError, KeyError, TypeError) as error:
        parser.error(f"--resume folder {run_dir} has no readable training settings: {error} Pass the folder of "
                     f"an earlier run, which contains config.json.")

    ignored = sorted(
        name for name, value in explicit_options.items()
        if name in RUN_DEFINING_FIELDS and value != getattr(saved, name)
    )
    if ignored:
        logger.warning("Resuming keeps the run's own %s; the values given on the command line are ignored",
                       ", ".join(ignored))

    values = saved.to_dict()
    values.update({name: value for name, value in explicit_options.items() if name not in RUN_DEFINING_FIELDS})
    config = TrainConfig.from_dict(values)

    try:
        check_epochs_left(run_dir, config.epochs, "--epochs")
    except ValueError as error:
        parser.error(str(error))
    return config


class StopFlag:
    """SIGINT handler: the first Ctrl-C makes fit() stop after the current batch, a second one aborts."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("Stopping after the current batch; the last completed epoch is kept. Press Ctrl-C again "
                       "to abort at once.")


class ProgressBars:
    """Turn fit()'s batch events into one tqdm bar per epoch (shown only on a terminal)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.epoch = 0

    def __call__(self, event: Any) -> None:
        from tqdm import tqdm

        if event.kind == "batch":
            if self.bar is None or event.epoch != self.epoch:
                self.close()
                self.epoch = event.epoch
                self.bar = tqdm(total=event.num_batches, desc=f"epoch {event.epoch}/{event.num_epochs}",
                                unit="batch", leave=False, dynamic_ncols=True, disable=None)
            self.bar.update(event.batch - self.bar.n)
            self.bar.set_postfix(loss=f"{event.loss:.4f}", refresh=False)
        elif event.kind in ("epoch", "end"):
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the training command line and return the process exit code."""
    configure_allocator()
    setup_logging()
    config, namespace = parse_config(argv)

    # Under torchrun only rank 0 reports progress; the other processes log warnings and errors.
    is_main_process = int(os.environ.get("RANK", "0")) == 0
    if not is_main_process:
        setup_logging(logging.WARNING)
    elif namespace.verbose:
        setup_logging(logging.DEBUG)

    from tqdm.contrib.logging import logging_redirect_tqdm

    from dogbreeds.trainer import fit

    user_errors = user_error_types()
    stop = StopFlag()
    previous_handler = signal.signal(signal.SIGINT, stop.handle)
    bars = ProgressBars()
    try:
        with logging_redirect_tqdm(loggers=[logging.getLogger("dogbreeds")]):
            result = fit(config, on_event=bars, should_stop=stop)
    except user_errors as error:
        bars.close()
        logger.debug("Training failed", exc_info=True)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_DATA_ERROR
    finally:
        bars.close()
        signal.signal(signal.SIGINT, previous_handler)

    if is_main_process:
        _print_summary(result)
    return EXIT_INTERRUPTED if result.stopped else 0


def _print_summary(result: Any) -> None:
    if not result.history:
        print(f"Stopped before the first epoch completed; nothing was saved to {result.run_dir}.")
        return

    best = result.best
    ending = "finished"
    if result.stopped:
        ending = "stopped"
    elif result.early_stopped:
        ending = "early stopped"
    print(f"Run {ending} after epoch {result.history[-1]['epoch']}: best validation top-1 "
          f"{100 * best['val_top1']:.2f}% (top-5 {100 * best['val_top5']:.2f}%) at epoch {best['epoch']}. "
          f"Saved to {result.run_dir}")


def user_error_types() -> tuple[type[BaseException], ...]:
    """Return the exception types that mean unusable input, reported without a traceback."""
    from dogbreeds.checkpoint import CheckpointError
    from dogbreeds.models import PretrainedWeightsError
    from dogbreeds.trainer import TrainingDivergedError

    # ValueError covers the data layer's DataFolderError and ImageDecodeError, invalid devices and a class list
    # that differs from the resumed run's; OSError covers missing folders, permissions and a full disk.
    return (ValueError, OSError, CheckpointError, PretrainedWeightsError, TrainingDivergedError)


if __name__ == "__main__":
    sys.exit(main())
