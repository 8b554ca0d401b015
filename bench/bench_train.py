"""Training throughput of fit() against a pure training step and against a torchvision input pipeline.

For each architecture at its default image size, measured side by side in one process:

- fit: dogbreeds.trainer.fit() on a generated folder of photo-like JPEGs (default 120 classes x 10 images of
  500x375), decoded-image cache on, CPU. The cache is built before the first epoch starts, so no epoch includes
  it. Epoch 1 is a warm-up. The images/s of the later epochs come from fit's epoch events, which count
  training batches only.
- tensors: the same model, optimizer, schedule, memory format and precision stepping on in-memory batches of 64,
  timed in blocks of as many steps as fit's epoch has batches. A block runs right after each counted epoch of
  fit, outside fit's epoch timer, so each epoch has a tensor block measured under the same machine load. The
  fit/tensors ratio is the median of these per-epoch ratios. On a shared or throttled machine that is steadier
  than a ratio of two medians measured minutes apart.
- fit, no augmentation: the same with min_scale=1 and no flips, to tell the cost of the random crops from the
  rest of the pipeline. It is paired with tensor blocks in the same way. No target.
- torchvision: ImageFolder + DataLoader (shuffle, persistent workers) with RandomResizedCrop + RandomHorizontalFlip
  + ToTensor + Normalize, feeding the same training step. Epoch 1 is a warm-up.

Targets: fit / tensors >= 0.95 for every architecture; fit / torchvision >= 1.25 for custom_cnn and resfcn18.
The allocator settings of the training command line are applied at start-up (DOGBREEDS_MALLOC_TUNING=0 skips
them). Run from anywhere:

    python bench/bench_train.py            # full run, about 5 minutes on 2 cores
    python bench/bench_train.py --quick    # short check of the script, figures not meaningful
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

TARGET_VS_TENSORS = 0.95
TARGET_VS_TORCHVISION = 1.25
TORCHVISION_TARGET_ARCHS = ("custom_cnn", "resfcn18")
BATCH_SIZE = 64


@dataclasses.dataclass
class PairedRates:
    """Images/s of fit's counted epochs, each with the tensor block measured right after it."""

    fit: list[float]
    tensors: list[float]
    batches: int
    preparation_s: float

    def ratio(self) -> float:
        """Return the median over epochs of fit / tensors."""
        return common.median([fit / tensors for fit, tensors in zip(self.fit, self.tensors)])


def paired_rates(arch: str, data_dir: Path, epochs: int, runs_dir: Path, precision: str, classes: int,
                 augment: bool = True) -> PairedRates:
    """Train `arch` with fit() and time a block of bare training steps after each epoch from epoch 2 on.

    Epoch 1 is a warm-up for both. The blocks run in fit's epoch callback, after fit has stopped its epoch timer
    and before it starts the next one, so they do not count in fit's images/s.
    """
    from dogbreeds.config import TrainConfig
    from dogbreeds.models import DEFAULT_IMAGE_SIZE
    from dogbreeds.trainer import fit

    step = common.TrainingStep(arch, DEFAULT_IMAGE_SIZE[arch], classes, BATCH_SIZE, precision=precision)
    rates = PairedRates(fit=[], tensors=[], batches=0, preparation_s=0.0)
    started = time.perf_counter()

    def on_event(event) -> None:
        if event.kind == "start":
            rates.batches = event.num_batches
            rates.preparation_s = time.perf_counter() - started
        elif event.kind == "epoch" and event.epoch > 1:
            rates.fit.append(event.metrics["images_per_s"])
            rates.tensors.extend(common.images_per_second_on_tensors(step, rates.batches, blocks=1))

    config = TrainConfig(train_dir=data_dir, arch=arch, epochs=epochs, batch_size=BATCH_SIZE, device="cpu",
                         out=runs_dir, cache_dir=common.OUT_DIR / "cache", precision=precision)
    if not augment:
        config = dataclasses.replace(config, min_scale=1.0, hflip=False)
    fit(config, on_event=on_event)
    return rates


def torchvision_rates(step: common.TrainingStep, data_dir: Path, epochs: int, workers: int) -> list[float]:
    """Train with an ImageFolder + DataLoader pipeline; return images/s of epochs 2..N."""
    import torch
    from torchvision import datasets, transforms

    from dogbreeds.config import TrainConfig
    from dogbreeds.transforms import IMAGENET_MEAN, IMAGENET_STD

    # The crop scale matches fit()'s default augmentation, so both pipelines crop the same share of each photo.
    pipeline = transforms.Compose([
        transforms.RandomResizedCrop(step.image_size, scale=(TrainConfig().min_scale, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    dataset = datasets.ImageFolder(str(data_dir), transform=pipeline)
    # drop_last avoids a final batch of one, which BatchNorm rejects in training mode.
    loader = torch.utils.data.DataLoader(dataset, batch_size=step.batch_size, shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0, drop_last=True)

    rates = []
    for epoch in range(1, epochs + 1):
        images_seen = 0
        started = time.perf_counter()
        for images, labels in loader:
            step(images, labels)
            images_seen += len(labels)
        if epoch > 1:
            rates.append(images_seen / (time.perf_counter() - started))
    return rates


def parse_arguments() -> argparse.Namespace:
    from dogbreeds.models import MODEL_NAMES
    from dogbreeds.runtime import PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES),
                        help="architectures to measure, each at its default image size (default: all)")
    parser.add_argument("--classes", type=int, default=120, help="class folders of the generated set (default: 120)")
    parser.add_argument("--per-class", type=int, default=10, help="generated images per class (default: 10)")
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs per pipeline, the first a warm-up; at least 2 (default: 4)")
    parser.add_argument("--torchvision-workers", type=int, default=2,
                        help="DataLoader worker processes of the torchvision pipeline (default: 2)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="training precision of every pipeline, as dogbreeds.train's option (default: auto)")
    parser.add_argument("--quick", action="store_true",
                        help="short check of the script: 120 classes x 3 images, 2 epochs; figures not meaningful")
    options = parser.parse_args()
    if options.quick:
        options.per_class, options.epochs = 3, 2
    if options.epochs < 2:
        parser.error(f"--epochs must be at least 2 (epoch 1 is a warm-up), got {options.epochs}")
    return options


def main() -> int:
    options = parse_arguments()

    from dogbreeds.models import DEFAULT_IMAGE_SIZE
    import torch

    from dogbreeds.runtime import configure_allocator, describe_precision, resolve_precision, setup_logging

    tuned = configure_allocator()
    setup_logging(logging.WARNING)
    common.print_machine()
    print(f"glibc allocator settings applied: {tuned}")

    spec = common.ImageSetSpec(classes=options.classes, images=options.classes * options.per_class)
    data_dir = common.ensure_image_set(spec)
    print(f"data: {common.describe_image_set(data_dir)}")
    print(f"batch {BATCH_SIZE}, {options.epochs} epochs per pipeline (epoch 1 not counted), "
          f"torchvision DataLoader with {options.torchvision_workers} workers, precision {options.precision} "
          f"({describe_precision(resolve_precision(options.precision, torch.device('cpu')))} here)\n")

    rows = []
    all_passed = True
    common.OUT_DIR.mkdir(parents=True, exist_ok=True)
    for arch in options.archs:
        size = DEFAULT_IMAGE_SIZE[arch]
        with tempfile.TemporaryDirectory(prefix="runs-", dir=common.OUT_DIR) as runs_dir:
            augmented = paired_rates(arch, data_dir, options.epochs, Path(runs_dir), options.precision,
                                     options.classes)
        print(f"{arch}: data preparation before epoch 1 (scan, check, cache build or reuse) "
              f"{augmented.preparation_s:.1f} s")
        with tempfile.TemporaryDirectory(prefix="runs-", dir=common.OUT_DIR) as runs_dir:
            plain = paired_rates(arch, data_dir, options.epochs, Path(runs_dir), options.precision, options.classes,
                                 augment=False)
        print(f"{arch}: per epoch, fit img/s {_format_rates(augmented.fit)} against tensors "
              f"{_format_rates(augmented.tensors)}; no augmentation {_format_rates(plain.fit)} against "
              f"{_format_rates(plain.tensors)}")

        step = common.TrainingStep(arch, size, options.classes, BATCH_SIZE, precision=options.precision)
        torchvision_per_epoch = torchvision_rates(step, data_dir, options.epochs, options.torchvision_workers)

        fit_rate = common.median(augmented.fit)
        plain_rate = common.median(plain.fit)
        tensor_rate = common.median(augmented.tensors + plain.tensors)
        torchvision_rate = common.median(torchvision_per_epoch)
        vs_tensors = augmented.ratio()
        vs_torchvision = fit_rate / torchvision_rate

        checks = [vs_tensors >= TARGET_VS_TENSORS]
        if arch in TORCHVISION_TARGET_ARCHS:
            checks.append(vs_torchvision >= TARGET_VS_TORCHVISION)
        all_passed = all_passed and all(checks)
        torchvision_target = f">= {TARGET_VS_TORCHVISION}" if arch in TORCHVISION_TARGET_ARCHS else "none"
        rows.append([
            arch, size, round(fit_rate, 1), round(plain_rate, 1), round(tensor_rate, 1), round(torchvision_rate, 1),
            round(vs_tensors, 3), round(plain.ratio(), 3), round(vs_torchvision, 2), torchvision_target,
            common.verdict(all(checks)),
        ])

    print()
    common.print_table(
        ["arch", "px", "fit img/s", "fit, no augmentation", "tensors img/s", "torchvision img/s", "fit/tensors",
         "no augmentation/tensors", "fit/torchvision", "torchvision target", "result"],
        rows,
    )
    print(f"\nfit/tensors: median over epochs of fit's images/s / the tensor block run right after that epoch. "
          f"tensors img/s: median of all blocks.")
    print(f"targets: fit/tensors >= {TARGET_VS_TENSORS} for every architecture, fit/torchvision as listed; "
          f"'no augmentation' (--min-scale 1 --no-flip) has no target and shows the loader's cost without crops")
    print(f"load average (1 min) at end: {common.load_average():.2f}")
    if options.quick:
        print("--quick: too few batches for meaningful figures; run without --quick to measure.")
    return 0 if all_passed else 1


def _format_rates(rates: list[float]) -> str:
    return ", ".join(f"{rate:.0f}" for rate in rates)


if __name__ == "__main__":
    sys.exit(main())
