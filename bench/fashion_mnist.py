"""Convert the Fashion-MNIST IDX files into class folders that dogbreeds can train on.

Debian's ``dataset-fashion-mnist`` package installs the four IDX files under
``/usr/share/datasets/fashion-mnist``. This script writes each 28x28 grey photo as a PNG into
``DEST/train/<class>/`` and ``DEST/test/<class>/``, the same one-folder-per-class layout as Stanford Dogs,
so the CLI runs on it unchanged:

    python bench/fashion_mnist.py --dest data/fashion-mnist
    python -m dogbreeds.train --train_dir data/fashion-mnist/train --test_dir data/fashion-mnist/test
"""

from __future__ import annotations

import argparse
import gzip
import struct
import sys
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")

# Class names in the order of the label ids 0-9. "T-shirt/top" becomes "T-shirt_top" because "/" cannot be part of a folder name.
CLASS_NAMES = (
    "T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot",
)

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


def read_idx_images(path: Path) -> np.ndarray:
    """Read an IDX3 image file (gzip-compressed) into a uint8 array of shape [N, rows, cols]."""
    with gzip.open(path, "rb") as stream:
        magic, count, rows, cols = struct.unpack(">IIII", stream.read(16))
        if magic != IMAGES_MAGIC:
            raise ValueError(f"{path}: expected IDX image magic {IMAGES_MAGIC}, found {magic}. Pass the *-images-idx3-ubyte.gz file.")
        pixels = np.frombuffer(stream.read(), dtype=np.uint8)

    expected = count * rows * cols
    if pixels.size != expected:
        raise ValueError(f"{path}: expected {expected} pixel bytes for {count} images, found {pixels.size}. The file is truncated: reinstall dataset-fashion-mnist.")
    return pixels.reshape(count, rows, cols)


def read_idx_labels(path: Path) -> np.ndarray:
    """Read an IDX1 label file (gzip-compressed) into a uint8 array of shape [N]."""
    with gzip.open(path, "rb") as stream:
        magic, count = struct.unpack(">II", stream.read(8))
        if magic != LABELS_MAGIC:
            raise ValueError(f"{path}: expected IDX label magic {LABELS_MAGIC}, found {magic}. Pass the *-labels-idx1-ubyte.gz file.")
        labels = np.frombuffer(stream.read(), dtype=np.uint8)

    if labels.size != count:
        raise ValueError(f"{path}: expected {count} labels, found {labels.size}. The file is truncated: reinstall dataset-fashion-mnist.")
    return labels


def write_split(images: np.ndarray, labels: np.ndarray, dest: Path) -> int:
    """Write one PNG per image into ``dest/<class>/`` and return the number of files written."""
    if len(images) != len(labels):
        raise ValueError(f"{dest}: {len(images)} images but {len(labels)} labels. Pass an images file and a labels file of the same split.")

    for name in CLASS_NAMES:
        (dest / name).mkdir(parents=True, exist_ok=True)

    for index, (pixels, label) in enumerate(zip(images, labels)):
        path = dest / CLASS_NAMES[label] / f"{index:05d}.png"
        Image.fromarray(pixels, mode="L").save(path, optimize=False, compress_level=1)
    return len(images)


def convert(source: Path, dest: Path) -> None:
    """Convert both Fashion-MNIST splits found in ``source`` into class folders under ``dest``."""
    splits = {"train": "train", "test": "t10k"}
    for split, prefix in splits.items():
        images_path = source / f"{prefix}-images-idx3-ubyte.gz"
        labels_path = source / f"{prefix}-labels-idx1-ubyte.gz"
        for path in (images_path, labels_path):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} not found. Install Debian's package with `apt-get install dataset-fashion-mnist` "
                    f"or pass --source to the folder that holds the IDX files"
                )

        written = write_split(read_idx_images(images_path), read_idx_labels(labels_path), dest / split)
        print(f"{split}: {written} images in {dest / split}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder with the IDX .gz files (default: %(default)s)")
    parser.add_argument("--dest", type=Path, default=Path("data/fashion-mnist"), help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)

    try:
        convert(args.source, args.dest)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
