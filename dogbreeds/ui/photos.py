"""Checks on a photo uploaded to Compare, before and while it is decoded.

Every rejection is a PhotoRejected with a MESSAGES key and its values, so the handler can explain it in the
user's language: no photo, too many bytes, HEIC/HEIF, too many pixels, or not a readable image.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

# ISO base media brands of HEIF/HEIC photos (bytes 8-12, after the "ftyp" box type at bytes 4-8).
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avci"})


class PhotoRejected(ValueError):
    """A photo the app will not classify; `key` is a MESSAGES key and `values` fill its placeholders."""

    def __init__(self, key: str, **values: Any) -> None:
        super().__init__(f"{key}: {values}" if values else key)
        self.key = key
        self.values = values


def is_heif(header: bytes) -> bool:
    """Tell whether the first bytes of a file are those of a HEIF/HEIC image."""
    return len(header) >= 12 and header[4:8] == b"ftyp" and header[8:12] in HEIF_BRANDS


def read_photo_bytes(value: Any, max_bytes: int) -> bytes:
    """Return the encoded bytes of an upload: a file path, a `data:` URL, raw bytes or None.

    Raises PhotoRejected("compare_no_image") for no photo and ("compare_too_many_bytes") above `max_bytes`.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        raise PhotoRejected("compare_no_image")

    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, str) and value.startswith("data:"):
        data = _decode_data_url(value)
    elif isinstance(value, (str, Path)):
        path = Path(value)
        try:
            size = path.stat().st_size
        except OSError:
            raise PhotoRejected("compare_no_image") from None
        _check_byte_count(size, max_bytes)
        data = path.read_bytes()
    else:
        raise PhotoRejected("compare_unreadable")

    _check_byte_count(len(data), max_bytes)
    if not data:
        raise PhotoRejected("compare_unreadable")
    return data


def decode_photo(data: bytes, max_pixels: int) -> Image.Image:
    """Decode encoded photo bytes to RGB with decode.load_rgb after checking the format and the pixel count."""
    from dogbreeds.decode import ImageDecodeError, load_rgb

    if is_heif(data[:16]):
        raise PhotoRejected("compare_heic")

    # Image.open reads only the header, so the pixel count is known before any pixel is decoded.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
    except Image.DecompressionBombError:
        raise PhotoRejected("compare_too_many_pixels_huge", limit=_megapixels(max_pixels)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise PhotoRejected("compare_unreadable") from None

    if width * height > max_pixels:
        raise PhotoRejected(
            "compare_too_many_pixels",
            width=width,
            height=height,
            megapixels=_megapixels(width * height),
            limit=_megapixels(max_pixels),
        )

    try:
        return load_rgb(data)
    except ImageDecodeError as error:
        if "HEIC" in str(error):
            raise PhotoRejected("compare_heic") from error
        raise PhotoRejected("compare_unreadable") from error


def _decode_data_url(url: str) -> bytes:
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        raise PhotoRejected("compare_unreadable")
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        raise PhotoRejected("compare_unreadable") from None


def _check_byte_count(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise PhotoRejected("compare_too_many_bytes", size=f"{size / 1e6:.1f}", limit=f"{max_bytes / 1e6:g}")


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.3g}"
