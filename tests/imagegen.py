"""Small image files and class-per-folder trees for tests, generated with Pillow and numpy.

Import it from any test module as `import imagegen` (pytest puts `tests/` on `sys.path`). Every writer
creates the parent folders and returns the path it wrote. Sizes are (width, height) in pixels, as in Pillow.

    make_class_tree(tmp_path / "images", {"n02085620-Chihuahua": 3, "n02085936-Maltese_dog": 2})

writes 3 + 2 distinct JPEGs whose colour depends on the class, so a tiny model can learn the classes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

Color = tuple[int, int, int]

# Well-separated colours for classes 0, 1, 2, ...; later classes cycle with a shifted hue.
_PALETTE: list[Color] = [
    (220, 40, 40),
    (40, 180, 60),
    (40, 80, 220),
    (230, 200, 40),
    (160, 60, 200),
    (40, 200, 210),
    (240, 130, 30),
    (120, 120, 120),
]


def class_color(class_index: int) -> Color:
    """Return a distinct RGB colour for class number `class_index`."""
    red, green, blue = _PALETTE[class_index % len(_PALETTE)]
    shift = 25 * (class_index // len(_PALETTE))
    return ((red + shift) % 256, (green + 2 * shift) % 256, (blue + 3 * shift) % 256)


def noisy_pixels(size: tuple[int, int], color: Color, seed: int, amplitude: int = 12) -> np.ndarray:
    """Return a uint8 (height, width, 3) array of `color` plus seeded noise of +-`amplitude`."""
    width, height = size
    rng = np.random.default_rng(seed)
    noise = rng.integers(-amplitude, amplitude + 1, size=(height, width, 3))
    return np.clip(np.asarray(color, dtype=np.int16) + noise, 0, 255).astype(np.uint8)


def write_image(path: Path, image: Image.Image, format: str | None = None, **save_options) -> Path:
    """Save `image` to `path` (format from the extension unless `format` is given) and return `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=format, **save_options)
    return path


def write_jpeg(
    path: Path,
    size: tuple[int, int] = (16, 16),
    color: Color = (200, 100, 50),
    *,
    seed: int | None = None,
    quality: int = 95,
) -> Path:
    """Write an RGB JPEG of one colour, or of `color` plus seeded noise when `seed` is given."""
    pixels = _solid_or_noisy(size, color, seed)
    return write_image(path, Image.fromarray(pixels), format="JPEG", quality=quality)


def write_png(
    path: Path,
    size: tuple[int, int] = (16, 16),
    color: Color = (200, 100, 50),
    *,
    seed: int | None = None,
    mode: str = "RGB",
) -> Path:
    """Write a PNG of one colour (or colour plus noise) converted to `mode` ("RGB", "L", "RGBA", "P", ...)."""
    image = Image.fromarray(_solid_or_noisy(size, color, seed))
    if mode == "P":
        # The adaptive palette keeps the exact colour; the default web palette would round it.
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    return write_image(path, image.convert(mode), format="PNG")


def write_bytes(path: Path, data: bytes) -> Path:
    """Write raw bytes (for empty, truncated or random "images") and return `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_class_tree(
    root: Path,
    classes: dict[str, int],
    size: tuple[int, int] = (16, 16),
    extension: str = ".jpg",
) -> list[Path]:
    """Write `classes[name]` distinct images into `root/name/` for each class and return all paths.

    Class i (in sorted name order) is coloured `class_color(i)` with noise seeded by the class and image
    number, so no two files are byte-identical and every call with the same arguments writes the same
    bytes. `extension` picks the format: ".jpg", ".jpeg", ".png", ".bmp", ".webp", ...
    """
    paths = []
    for class_index, name in enumerate(sorted(classes)):
        for image_index in range(classes[name]):
            seed = class_index * 100_003 + image_index
            pixels = noisy_pixels(size, class_color(class_index), seed)
            stem = f"{name.split('-')[0]}_{image_index}"
            path = Path(root) / name / f"{stem}{extension}"
            save_options = {"quality": 95} if extension.lower() in (".jpg", ".jpeg") else {}
            paths.append(write_image(path, Image.fromarray(pixels), **save_options))
    return paths


def stanford_class_names(count: int) -> list[str]:
    """Return `count` folder names in the Stanford Dogs style, such as "n02085620-Breed_0"."""
    return [f"n{2085620 + index:08d}-Breed_{index}" for index in range(count)]


def file_digest(path: Path) -> str:
    """Return the SHA-256 hex digest of a file's bytes, to compare files in tests."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _solid_or_noisy(size: tuple[int, int], color: Color, seed: int | None) -> np.ndarray:
    if seed is not None:
        return noisy_pixels(size, color, seed)
    width, height = size
    return np.full((height, width, 3), color, dtype=np.uint8)
