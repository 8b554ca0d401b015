"""Decode any image source into an 8-bit RGB PIL image: the one decoder for training, evaluation and prediction.

Pillow picks the decoder from the file's content, so a PNG saved as `.jpg` decodes as PNG. On top of that,
`load_rgb` applies the EXIF orientation, takes the first frame of animated images, composites transparency
onto `BACKGROUND_RGB`, scales 16-bit, 32-bit and floating-point pixels down to 8 bits, and keeps Pillow's
decompression-bomb guard (`PIL.Image.MAX_IMAGE_PIXELS`) switched on.
"""

from __future__ import annotations

import io
import logging
import math
import os
import struct
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

# White, the usual backdrop of product-style photos with a transparent background.
BACKGROUND_RGB: tuple[int, int, int] = (255, 255, 255)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray]

# Pillow's plugins can raise more than OSError on damaged files, such as struct.error from short headers
# and SyntaxError from the PNG and TIFF parsers.
_PILLOW_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    ZeroDivisionError,
    Image.DecompressionBombError,
)

# ISO base media file brands that mean HEIF/HEIC, which Pillow cannot read without the pillow-heif plugin.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")

_EXIF_ORIENTATION_TAG = 0x0112
_ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Modes that Pillow converts to RGB correctly with `convert("RGB")` and that carry no transparency.
_DIRECT_RGB_MODES = frozenset({"1", "L", "RGB", "RGBX", "CMYK", "YCbCr", "HSV"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "PA"})


class ImageDecodeError(ValueError):
    """Raised when a source cannot be decoded into an RGB image; the message names the source and the reason."""

    def __init__(self, message: str, source_name: str | None = None) -> None:
        super().__init__(message)
        self.source_name = source_name


def load_rgb(source: ImageSource, *, min_side: int | None = None) -> Image.Image:
    """Decode `source` into a new, fully loaded 8-bit RGB image.

    `source` may be a path, encoded bytes, a binary file object (read from its start, because Pillow seeks
    to 0, and not closed), a PIL image in any mode, or a numpy array shaped HxW, HxWx1, HxWx3 or HxWx4. With `min_side`,
    JPEG files are decoded at a reduced scale (1/2, 1/4 or 1/8) whose shorter side is still at least
    `min_side` pixels, which is much faster for small training sizes. Raises ImageDecodeError.
    """
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be a positive number of pixels or None, got {min_side}.")

    if isinstance(source, np.ndarray):
        return array_to_rgb(source)
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or "<PIL image>"
        # The caller's image is not drafted, because Image.draft would change it in place.
        return _decode_opened(source, name, None)
    if isinstance(source, (str, os.PathLike)):
        return _load_path(Path(source), min_side)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _load_stream(io.BytesIO(bytes(source)), "<bytes>", min_side)
    if hasattr(source, "read"):
        return _load_file_object(source, min_side)
    raise TypeError(
        f"load_rgb cannot read a {type(source).__name__}; pass a path, bytes, a binary file object, "
        f"a PIL image or a numpy array."
    )


def is_readable(source: str | Path, *, min_side: int | None = None) -> bool:
    """Decode `source` fully and tell whether that worked, logging the reason at DEBUG level when not."""
    try:
        load_rgb(source, min_side=min_side)
    except ImageDecodeError as error:
        logger.debug("%s", error)
        return False
    return True


def try_load_rgb(source: ImageSource, *, min_side: int | None = None) -> tuple[Image.Image | None, str | None]:
    """Decode `source` like `load_rgb`, returning `(image, None)` on success and `(None, reason)` on failure."""
    try:
        return load_rgb(source, min_side=min_side), None
    except ImageDecodeError as error:
        return None, str(error)


def _load_path(path: Path, min_side: int | None) -> Image.Image:
    name = str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageDecodeError(f"Cannot decode image '{name}': the file does not exist.", name) from None
    except OSError as error:
        raise ImageDecodeError(f"Cannot decode image '{name}': {error}.", name) from error
    if path.is_dir():
        raise ImageDecodeError(f"Cannot decode image '{name}': it is a folder, not an image file.", name)
    if size == 0:
        raise ImageDecodeError(f"Cannot decode image '{name}': the file is empty (0 bytes).", name)

    try:
        stream = path.open("rb")
    except OSError as error:
        raise ImageDecodeError(f"Cannot decode image '{name}': {error}.", name) from error
    with stream:
        return _load_stream(stream, name, min_side)


def _load_file_object(file_object: BinaryIO, min_side: int | None) -> Image.Image:
    name = str(getattr(file_object, "name", "") or "<file object>")
    seekable = getattr(file_object, "seekable", None)
    if callable(seekable) and seekable():
        return _load_stream(file_object, name, min_side)

    # Pillow seeks while identifying formats, so a pipe or network stream is read into memory first.
    return _load_stream(io.BytesIO(file_object.read()), name, min_side)


def _load_stream(stream: BinaryIO, name: str, min_side: int | None) -> Image.Image:
    """Open an image from a seekable binary stream and decode it; the caller closes the stream."""
    try:
        image = Image.open(stream)
    except UnidentifiedImageError as error:
        raise ImageDecodeError(_unidentified_message(stream, name), name) from error
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(
            f"Cannot decode image '{name}': {error} It is over Pillow's decompression-bomb limit "
            f"(PIL.Image.MAX_IMAGE_PIXELS); resize the image if it is a genuine photo.",
            name,
        ) from error
    except _PILLOW_DECODE_ERRORS as error:
        raise ImageDecodeError(_failure_message(name, error), name) from error

    with image:
        return _decode_opened(image, name, min_side)


def _decode_opened(image: Image.Image, name: str, min_side: int | None) -> Image.Image:
    """Turn an opened (possibly not yet loaded) PIL image into a new loaded RGB image.

    The current frame is used, which for a freshly opened animated GIF, APNG or WebP is the first one.
    """
    _check_pixel_limit(image, name)
    orientation = _exif_orientation(image, name)
    try:
        if min_side is not None and image.format == "JPEG":
            image.draft(image.mode, _draft_size(image.size, min_side))
        image.load()
        rgb = convert_to_rgb(image)
    except _PILLOW_DECODE_ERRORS as error:
        if isinstance(error, ImageDecodeError):
            raise
        raise ImageDecodeError(_failure_message(name, error), name) from error

    transpose = _ORIENTATION_TRANSPOSE.get(orientation)
    if transpose is not None:
        rgb = rgb.transpose(transpose)
    return rgb


def _check_pixel_limit(image: Image.Image, name: str) -> None:
    """Reject images above Pillow's decompression-bomb limit before any pixel is decoded.

    Pillow itself only warns between `MAX_IMAGE_PIXELS` and twice that, and raises above; a training set
    has no use for either, so both are rejected here. `MAX_IMAGE_PIXELS = None` turns the check off.
    """
    limit = Image.MAX_IMAGE_PIXELS
    pixels = image.width * image.height
    if limit is not None and pixels > limit:
        raise ImageDecodeError(
            f"Cannot decode image '{name}': {image.width}x{image.height} = {pixels:,} pixels is over "
            f"Pillow's decompression-bomb limit of {limit:,} pixels (PIL.Image.MAX_IMAGE_PIXELS). "
            f"Resize the image if it is a genuine photo.",
            name,
        )


def _exif_orientation(image: Image.Image, name: str) -> int:
    """Read the EXIF orientation (1-8), treating a missing or unparsable EXIF block as upright."""
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except (*_PILLOW_DECODE_ERRORS, TypeError) as error:
        # A damaged EXIF block does not make the pixels unusable, so the image is kept as stored.
        logger.debug("Ignoring unreadable EXIF data in '%s': %s", name, error)
        return 1


def _draft_size(size: tuple[int, int], min_side: int) -> tuple[int, int]:
    """Return the smallest (width, height) with the image's aspect ratio whose shorter side is `min_side`."""
    width, height = size
    short = min(width, height)
    if short <= min_side:
        return width, height
    return math.ceil(width * min_side / short), math.ceil(height * min_side / short)


def convert_to_rgb(image: Image.Image) -> Image.Image:
    """Convert a loaded PIL image of any mode into a new 8-bit RGB image.

    Transparency is composited onto `BACKGROUND_RGB`. 16-bit modes (`I;16`, `I;16B`, ...) are scaled by
    255/65535, and 32-bit integer (`I`) and float (`F`) pixels are scaled as `scale_to_uint8` describes.
    """
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode == "P":
        has_transparency = "transparency" in image.info or image.palette.mode == "RGBA"
        return _composite(image.convert("RGBA")) if has_transparency else image.convert("RGB")
    if mode == "La":
        # Pillow converts premultiplied La only to LA, so unpremultiply first.
        return _composite(image.convert("LA").convert("RGBA"))
    if mode in _ALPHA_MODES:
        return _composite(image.convert("RGBA"))
    if mode in _DIRECT_RGB_MODES:
        if "transparency" in image.info:
            return _composite(image.convert("RGBA"))
        return image.convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_gray_to_rgb_array(scale_to_uint8(np.asarray(image))))
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ValueError(f"image mode '{mode}' cannot be converted to RGB ({error})") from error


def _composite(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (*BACKGROUND_RGB, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale an array of pixel values of any numeric type to uint8, choosing the scale from dtype and range.

    uint8 is kept; bool maps to 0/255; uint16 is divided by 257 (65535 -> 255). Other integer types use the
    8-bit scale if all values lie in 0..255, the 16-bit scale if they lie in 0..65535, and are otherwise
    stretched linearly from their minimum to their maximum. Floats in 0..1 are multiplied by 255, floats in
    0..255 are rounded, and any other float range is stretched; NaN becomes 0.
    """
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if values.dtype.kind == "u" and values.dtype.itemsize == 2:
        return _scale_16_bit(values)
    if np.issubdtype(values.dtype, np.integer):
        return _scale_integers(values)
    if np.issubdtype(values.dtype, np.floating):
        return _scale_floats(values)
    raise ImageDecodeError(
        f"Cannot turn an array of dtype {values.dtype} into pixels; pass uint8, another integer type or float."
    )


def _scale_16_bit(values: np.ndarray) -> np.ndarray:
    wide = values.astype(np.uint32)
    # Rounded division by 257 maps 0..65535 exactly onto 0..255 (32768 -> 128).
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _scale_integers(values: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return values.astype(np.uint8)
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high <= 255:
        return values.astype(np.uint8)
    if low >= 0 and high <= 65535:
        return _scale_16_bit(values)
    return _stretch(values.astype(np.float64), float(low), float(high))


def _scale_floats(values: np.ndarray) -> np.ndarray:
    finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if finite.size == 0:
        return finite.astype(np.uint8)
    low, high = float(finite.min()), float(finite.max())
    if low >= 0.0 and high <= 1.0:
        return np.rint(finite * 255.0).astype(np.uint8)
    if low >= 0.0 and high <= 255.0:
        return np.rint(finite).astype(np.uint8)
    return _stretch(finite, low, high)


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _gray_to_rgb_array(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, np.newaxis], 3, axis=2)


def array_to_rgb(array: np.ndarray) -> Image.Image:
    """Convert a numpy image shaped HxW, HxWx1, HxWx3 or HxWx4 (channels last) into an 8-bit RGB image.

    Pixel values are scaled with `scale_to_uint8`; a fourth channel is alpha and is composited onto
    `BACKGROUND_RGB`. Raises ImageDecodeError for other shapes, naming the shape and the fix.
    """
    shape = tuple(array.shape)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        raise ImageDecodeError(
            f"Cannot use an array shaped {shape} as an image: it looks channels-first (CxHxW). "
            f"Pass it channels-last, for example array.transpose(1, 2, 0)."
        )
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)) or array.size == 0:
        raise ImageDecodeError(
            f"Cannot use an array shaped {shape} as an image; expected HxW, HxWx1, HxWx3 or HxWx4 "
            f"with at least one pixel."
        )

    pixels = np.ascontiguousarray(scale_to_uint8(array))
    if pixels.ndim == 2:
        return Image.fromarray(_gray_to_rgb_array(pixels))
    channels = pixels.shape[2]
    if channels == 1:
        return Image.fromarray(_gray_to_rgb_array(pixels[:, :, 0]))
    if channels == 3:
        return Image.fromarray(pixels)
    return _composite(Image.fromarray(pixels))


def _unidentified_message(stream: BinaryIO, name: str) -> str:
    """Explain why Pillow could not identify `stream`, with a specific hint for HEIC photos."""
    header = _peek(stream, 16)
    if not header:
        return f"Cannot decode image '{name}': the file is empty (0 bytes)."
    if header[4:8] == b"ftyp" and header[8:12] in _HEIF_BRANDS:
        return (
            f"Cannot decode image '{name}': HEIC/HEIF images are not supported. "
            f"Convert it to JPEG or PNG (for example, export it from the Photos app) and try again."
        )
    return (
        f"Cannot decode image '{name}': its content is not an image format Pillow can read "
        f"(it starts with {header[:8]!r}). The file extension does not matter; re-save it as JPEG or PNG."
    )


def _failure_message(name: str, error: BaseException) -> str:
    detail = str(error) or type(error).__name__
    return f"Cannot decode image '{name}': {detail}. The file may be damaged or truncated; re-save or remove it."


def _peek(stream: BinaryIO, count: int) -> bytes:
    try:
        stream.seek(0)
        return stream.read(count)
    except (OSError, ValueError):
        return b""
