"""Seconds per epoch of end-to-end training on a CUDA GPU, over a generated set of Stanford Dogs size.

Self-contained: generates 20,580 photo-like 500x375 JPEGs in 120 class folders under bench/out/data (reused by
later runs), then trains resnet18 at 128 px with dogbreeds.trainer.fit() on cuda (batch 64, bf16 autocast as fit
uses on CUDA, cache on). The cache is built before epoch 1 and reported apart. Epoch 1 is a warm-up (cuDNN
autotuning, first allocations); the figure is the median of the later epochs' seconds (training and validation).

Target: resnet18 at 128 px <= 5 s per epoch. Without a CUDA device the script prints why and exits with status 2.

    python bench/bench_gpu.py            # full run on a GPU machine
    python bench/bench_gpu.py --quick    # short check of the script: 2,400 images, 2 epochs
    python bench/bench_gpu.py --quick --device cpu --images 240   # check the code path without a GPU
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

TARGET_SECONDS = 5.0
EXIT_NO_CUDA = 2


def parse_arguments() -> argparse.Namespace:
    from dogbreeds.models import MODEL_NAMES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=MODEL_NAMES, default="resnet18", help="architecture (default: resnet18)")
    parser.add_argument("--image-size", type=int, default=128, help="input side in pixels (default: 128)")
    parser.add_argument("--images", type=int,
                        help=f"generated images (default: {common.STANFORD_DOGS_IMAGES:,} as in Stanford Dogs, "
                             f"2,400 with --quick)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs, the first a warm-up; at least 2 (default: 4)")
    parser.add_argument("--device", default="cuda",
                        help="training device (default: cuda); 'cpu' only checks the script, the target is for CUDA")
    parser.add_argument("--quick", action="store_true", help="short check of the script: 2,400 images, 2 epochs")
    options = parser.parse_args()
    if options.quick:
        options.epochs = 2
    if options.images is None:
        options.images = 2400 if options.quick else common.STANFORD_DOGS_IMAGES
    if options.epochs < 2:
        parser.error(f"--epochs must be at least 2 (epoch 1 is a warm-up), got {options.epochs}")
    return options


def main() -> int:
    options = parse_arguments()

    import torch

    if options.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: no CUDA device is available (torch {torch.__version__}, built for CUDA "
              f"{torch.version.cuda or 'none'}), so the GPU benchmark cannot run here. Run it on a machine with an "
              f"NVIDIA GPU, or add --device cpu to check only the script's code path.", file=sys.stderr)
        return EXIT_NO_CUDA

    from dogbreeds.config import TrainConfig
    from dogbreeds.runtime import configure_allocator, setup_logging
    from dogbreeds.trainer import fit

    configure_allocator()
    setup_logging(logging.WARNING)
    common.print_machine()

    spec = common.ImageSetSpec(classes=common.STANFORD_DOGS_CLASSES, images=options.images)
    data_dir = common.ensure_image_set(spec)
    print(f"data: {common.describe_image_set(data_dir)}")

    epochs: list[dict] = []
    started = time.perf_counter()
    preparation = 0.0

    def on_event(event) -> None:
        nonlocal preparation
        if event.kind == "start":
            preparation = time.perf_counter() - started
        elif event.kind == "epoch":
            epochs.append(event.metrics)
            print(f"epoch {event.epoch}: {event.metrics['seconds']:.2f} s, "
                  f"{event.metrics['images_per_s']:.0f} training img/s")

    common.OUT_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="runs-", dir=common.OUT_DIR) as runs_dir:
        config = TrainConfig(train_dir=data_dir, arch=options.arch, image_size=options.image_size,
                             epochs=options.epochs, device=options.device, out=Path(runs_dir),
                             cache_dir=common.OUT_DIR / "cache")
        fit(config, on_event=on_event)

    later = epochs[1:]
    seconds = common.median([entry["seconds"] for entry in later])
    rate = common.median([entry["images_per_s"] for entry in later])
    passed = seconds <= TARGET_SECONDS
    print()
    common.print_table(
        ["arch", "px", "device", "train images", "data preparation s", "epoch s (median)", "training img/s",
         "target s", "result"],
        [[options.arch, options.image_size, options.device, later[0]["train_images"], round(preparation, 1),
          round(seconds, 2), round(rate), f"<= {TARGET_SECONDS:g}", common.verdict(passed)]],
    )
    print(f"\nepoch seconds include validation; data preparation (scan, check, cache build or reuse) is before epoch 1")
    print(f"load average (1 min) at end: {common.load_average():.2f}")
    if options.quick or not options.device.startswith("cuda"):
        print("--quick or a non-CUDA device: a check of the script only; run on CUDA without --quick to measure.")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
