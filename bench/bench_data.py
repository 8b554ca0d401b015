"""Compare training-data throughput: torchvision ImageFolder + DataLoader against the dogbreeds cache and loader.

Generates photo-like 500x375 JPEGs (smooth gradients, shapes, blur and noise, quality 90) in a temporary folder,
then measures, side by side in one run and for each image size:

- torchvision: ``ImageFolder`` with RandomResizedCrop + RandomHorizontalFlip + ToTensor + Normalize, iterated by a
  ``DataLoader`` (shuffle, persistent workers), every epoch.
- dogbreeds with the cache: every file decoded once into the uint8 memory-mapped cache, then
  ``BatchLoader(train=True)`` over the cache every epoch. The first epoch includes the cache build.
- dogbreeds without the cache: ``BatchLoader`` decoding with DataLoader workers, for reference.

Images per second count training samples delivered as normalized float tensors. Run from the repository root:

    python bench/bench_data.py --images 300 --sizes 64 128 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dogbreeds.cache import load_or_build_cache  # noqa: E402
from dogbreeds.data import BatchLoader, ImageSet  # noqa: E402
from dogbreeds.folders import scan_image_folder  # noqa: E402
from dogbreeds.transforms import IMAGENET_MEAN, IMAGENET_STD, resize_size  # noqa: E402

PHOTO_SIZE = (500, 375)  # width, height: a common size among the Stanford Dogs photos


def make_photo(rng: np.random.Generator) -> Image.Image:
    """Return a 500x375 RGB image with photo-like content: gradients, soft-edged shapes and sensor noise."""
    width, height = PHOTO_SIZE
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        slope_x, slope_y = rng.uniform(-0.3, 0.3, size=2)
        wave = 30 * np.sin(columns / rng.uniform(40, 120) + rng.uniform(0, 6)) * np.cos(rows / rng.uniform(40, 120))
        channels.append(rng.uniform(60, 190) + slope_x * columns + slope_y * rows + wave)
    image = Image.fromarray(np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8))

    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(5, 12))):
        left, top = rng.uniform(-50, width), rng.uniform(-50, height)
        box = (left, top, left + rng.uniform(30, 250), top + rng.uniform(30, 200))
        colour = tuple(int(value) for value in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.8, 2.5))))

    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, size=(height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def generate_dataset(root: Path, count: int, classes: int, seed: int) -> None:
    """Write ``count`` JPEGs spread over ``classes`` class folders under ``root``."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        folder = root / f"n{2085620 + index % classes:08d}-Breed_{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        make_photo(rng).save(folder / f"image_{index:05d}.jpg", quality=90)


def time_epochs(loader, epochs: int) -> list[float]:
    """Iterate ``loader`` for ``epochs`` epochs; return the seconds of each and check the samples are tensors."""
    seconds = []
    for epoch in range(epochs):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        started = time.perf_counter()
        for images, labels in loader:
            if images.dtype != torch.float32 or len(images) != len(labels):
                raise RuntimeError("the loader returned a malformed batch")
        seconds.append(time.perf_counter() - started)
    return seconds


def bench_torchvision(root: Path, size: int, epochs: int, batch_size: int, workers: int) -> list[float]:
    from torchvision import datasets, transforms

    pipeline = transforms.Compose(
        [
            transforms.RandomResizedCrop(size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    dataset = datasets.ImageFolder(str(root), transform=pipeline)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    return time_epochs(loader, epochs)


def bench_dogbreeds(
    root: Path, cache_dir: Path, size: int, epochs: int, batch_size: int, workers: int
) -> tuple[float, list[float], list[float]]:
    """Return (cache build seconds, cached epoch seconds, uncached epoch seconds)."""
    index = scan_image_folder(root)
    side = resize_size(size)

    started = time.perf_counter()
    cache = load_or_build_cache(index.paths, side, cache_dir, workers=workers)
    build_seconds = time.perf_counter() - started

    rows = list(range(len(index.paths)))
    cached = ImageSet(list(index.paths), list(index.labels), side, cache, rows)
    cached_seconds = time_epochs(BatchLoader(cached, batch_size, train=True, image_size=size), epochs)

    uncached = ImageSet(list(index.paths), list(index.labels), side)
    loader = BatchLoader(uncached, batch_size, train=True, image_size=size, workers=workers)
    uncached_seconds = time_epochs(loader, epochs)
    return build_seconds, cached_seconds, uncached_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300, help="number of generated JPEGs")
    parser.add_argument("--classes", type=int, default=4, help="number of class folders")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="model input sides in pixels")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per loader (the first one warms up)")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per batch")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for decoding")
    options = parser.parse_args()
    if options.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is reported apart from the repeated ones")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, load average before: {load:.2f}")

    with tempfile.TemporaryDirectory(prefix="dogbreeds-bench-") as temporary:
        root = Path(temporary) / "images"
        started = time.perf_counter()
        generate_dataset(root, options.images, options.classes, seed=0)
        elapsed = time.perf_counter() - started
        print(f"Generated {options.images} JPEGs of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} in {elapsed:.1f} s\n")

        count = options.images
        header = f"{'size':>4}  {'pipeline':<34} {'first epoch img/s':>18} {'repeated img/s':>15}"
        print(header)
        print("-" * len(header))
        for size in options.sizes:
            torchvision_seconds = bench_torchvision(root, size, options.epochs, options.batch_size, options.workers)
            build, cached, uncached = bench_dogbreeds(
                root, Path(temporary) / f"cache{size}", size, options.epochs, options.batch_size, options.workers
            )

            torchvision_first = count / torchvision_seconds[0]
            torchvision_repeated = count / statistics.median(torchvision_seconds[1:])
            cached_first = count / (build + cached[0])
            cached_repeated = count / statistics.median(cached[1:])
            rows = [
                ("torchvision ImageFolder+DataLoader", torchvision_first, torchvision_repeated),
                ("dogbreeds, cache (build + epoch)", cached_first, cached_repeated),
                ("dogbreeds, no cache", count / uncached[0], count / statistics.median(uncached[1:])),
            ]
            for name, first, repeated in rows:
                print(f"{size:>4}  {name:<34} {first:>18.0f} {repeated:>15.0f}")
            print(f"{size:>4}  cache build alone: {count / build:.0f} img/s")
            print(
                f"{size:>4}  ratio, repeated epochs: {cached_repeated / torchvision_repeated:.1f}x; "
                f"first epoch with cache build: {cached_first / torchvision_first:.1f}x\n"
            )

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average after: {load:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
