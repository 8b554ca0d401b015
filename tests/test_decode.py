"""Tests for load_rgb: every image mode and source type to 8-bit RGB, and clear errors for bad files."""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePath

import imagegen
import numpy as np
import pytest
from PIL import Image

from dogbreeds.decode import (
    BACKGROUND_RGB,
    ImageDecodeError,
    is_readable,
    load_rgb,
    scale_to_uint8,
    try_load_rgb,
)

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def _pixel(image: Image.Image, x: int = 0, y: int = 0) -> tuple[int, int, int]:
    return image.getpixel((x, y))


def _assert_close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 3) -> None:
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected)), f"{actual} is not close to {expected}"


def test_rgb_jpeg_keeps_size_and_colour(tmp_path: Path) -> None:
    path = imagegen.write_jpeg(tmp_path / "a.jpg", size=(20, 12), color=(200, 100, 50))

    image = load_rgb(path)

    assert image.mode == "RGB"
    assert image.size == (20, 12)
    _assert_close(_pixel(image, 10, 6), (200, 100, 50))


def test_result_survives_file_removal(tmp_path: Path) -> None:
    path = imagegen.write_png(tmp_path / "a.png", color=(10, 20, 30))

    image = load_rgb(path)
    os.remove(path)

    assert _pixel(image) == (10, 20, 30)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    path = imagegen.write_image(tmp_path / "cmyk.jpg", cmyk, format="JPEG", quality=95)

    image = load_rgb(path)

    assert image.mode == "RGB"
    _assert_close(_pixel(image, 8, 8), RED, tolerance=6)


def test_rgba_png_transparency_uses_background(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4, 4), dtype=np.uint8)
    pixels[:, :2] = (255, 0, 0, 255)  # left half opaque red
    pixels[:, 2:] = (0, 0, 255, 0)  # right half fully transparent blue
    pixels[0, 3] = (0, 0, 0, 128)  # one half-transparent black pixel
    path = imagegen.write_image(tmp_path / "rgba.png", Image.fromarray(pixels, "RGBA"))

    image = load_rgb(path)

    assert image.mode == "RGB"
    assert _pixel(image, 0, 1) == RED
    assert _pixel(image, 2, 1) == BACKGROUND_RGB
    _assert_close(_pixel(image, 3, 0), tuple(round(c * 127 / 255) for c in BACKGROUND_RGB), tolerance=2)


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    palette_image = Image.new("P", (4, 4), 0)
    palette_image.putpalette([0, 255, 0] + [255, 0, 0] + [0] * (256 * 3 - 6))
    palette_image.putpixel((3, 3), 1)
    path = imagegen.write_image(tmp_path / "p.png", palette_image, transparency=0)

    image = load_rgb(path)

    assert _pixel(image, 0, 0) == BACKGROUND_RGB
    assert _pixel(image, 3, 3) == RED


def test_palette_png_without_transparency(tmp_path: Path) -> None:
    path = imagegen.write_png(tmp_path / "p.png", color=(0, 128, 255), mode="P")

    assert _pixel(load_rgb(path)) == (0, 128, 255)


def test_palette_gif_with_transparency(tmp_path: Path) -> None:
    palette_image = Image.new("P", (4, 4), 2)
    palette_image.putpalette([255, 0, 0] + [0, 0, 255] + [0, 0, 0] + [0] * (253 * 3))
    palette_image.putpixel((0, 0), 0)
    path = imagegen.write_image(tmp_path / "t.gif", palette_image, transparency=2)

    image = load_rgb(path)

    assert _pixel(image, 0, 0) == RED
    assert _pixel(image, 1, 1) == BACKGROUND_RGB


@pytest.mark.parametrize(
    ("value", "expected"),
    [(32768, 128), (65535, 255), (1000, 4), (0, 0)],
)
def test_16_bit_png_scaled_not_saturated(tmp_path: Path, value: int, expected: int) -> None:
    gray16 = Image.fromarray(np.full((6, 6), value, dtype=np.uint16))
    path = imagegen.write_image(tmp_path / "g16.png", gray16)
    assert Image.open(path).mode.startswith("I")

    image = load_rgb(path)

    assert _pixel(image, 3, 3) == (expected, expected, expected)


def test_16_bit_big_endian_pil_image() -> None:
    gray16 = Image.fromarray(np.full((3, 3), 32768, dtype=np.uint16)).convert("I").convert("I;16B")
    assert gray16.mode == "I;16B"

    assert _pixel(load_rgb(gray16)) == (128, 128, 128)


def test_grayscale_l_png(tmp_path: Path) -> None:
    path = imagegen.write_image(tmp_path / "l.png", Image.new("L", (5, 5), 77))

    image = load_rgb(path)

    assert image.mode == "RGB"
    assert _pixel(image) == (77, 77, 77)


def test_grayscale_la_png(tmp_path: Path) -> None:
    pixels = np.zeros((2, 2, 2), dtype=np.uint8)
    pixels[0, 0] = (50, 255)
    pixels[1, 1] = (50, 0)
    path = imagegen.write_image(tmp_path / "la.png", Image.fromarray(pixels, "LA"))

    image = load_rgb(path)

    assert _pixel(image, 0, 0) == (50, 50, 50)
    assert _pixel(image, 1, 1) == BACKGROUND_RGB


def test_exif_rotated_jpeg_swaps_width_and_height(tmp_path: Path) -> None:
    # Stored 40x20 with red on the left, blue on the right. Orientation 6 means the camera was turned
    # 90 degrees clockwise, so the upright photo is 20x40 with the stored left edge at the top.
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = RED
    pixels[:, 20:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    path = imagegen.write_image(tmp_path / "rot.jpg", Image.fromarray(pixels), quality=95, exif=exif.tobytes())

    image = load_rgb(path)

    assert image.size == (20, 40)
    _assert_close(_pixel(image, 10, 5), RED, tolerance=8)
    _assert_close(_pixel(image, 10, 34), BLUE, tolerance=8)


def test_png_content_named_jpg(tmp_path: Path) -> None:
    path = imagegen.write_image(tmp_path / "n02105855_2933.jpg", Image.new("RGB", (7, 5), (1, 2, 3)), format="PNG")

    image = load_rgb(path)

    assert image.size == (7, 5)
    assert _pixel(image) == (1, 2, 3)


def test_upper_case_extension(tmp_path: Path) -> None:
    path = imagegen.write_jpeg(tmp_path / "DOG.JPEG", color=(0, 200, 0))

    _assert_close(_pixel(load_rgb(path)), (0, 200, 0))


def test_webp(tmp_path: Path) -> None:
    path = imagegen.write_image(tmp_path / "a.webp", Image.new("RGB", (8, 8), (0, 0, 200)), lossless=True)

    assert _pixel(load_rgb(path)) == (0, 0, 200)


def test_bmp_and_tiff(tmp_path: Path) -> None:
    bmp = imagegen.write_image(tmp_path / "a.bmp", Image.new("RGB", (3, 3), (9, 8, 7)))
    tiff = imagegen.write_image(tmp_path / "a.tif", Image.new("RGB", (3, 3), (7, 8, 9)))

    assert _pixel(load_rgb(bmp)) == (9, 8, 7)
    assert _pixel(load_rgb(tiff)) == (7, 8, 9)


def test_animated_gif_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (6, 6), RED), Image.new("RGB", (6, 6), BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 2

    assert _pixel(load_rgb(path)) == RED


def test_animated_webp_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (6, 6), RED), Image.new("RGB", (6, 6), BLUE)]
    path = tmp_path / "anim.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, lossless=True)

    assert _pixel(load_rgb(path)) == RED


def test_32_bit_integer_tiff(tmp_path: Path) -> None:
    values = np.array([[0, 100_000], [50_000, 200_000]], dtype=np.int32)
    path = imagegen.write_image(tmp_path / "i32.tif", Image.fromarray(values))
    assert Image.open(path).mode == "I"

    image = load_rgb(path)

    assert _pixel(image, 0, 0) == (0, 0, 0)
    assert _pixel(image, 1, 1) == (255, 255, 255)
    assert _pixel(image, 1, 0) == (128, 128, 128)


def test_32_bit_integer_in_16_bit_range(tmp_path: Path) -> None:
    values = np.full((2, 2), 32768, dtype=np.int32)
    path = imagegen.write_image(tmp_path / "i32.tif", Image.fromarray(values))

    assert _pixel(load_rgb(path)) == (128, 128, 128)


def test_32_bit_float_tiff(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)
    path = imagegen.write_image(tmp_path / "f32.tif", Image.fromarray(values))
    assert Image.open(path).mode == "F"

    image = load_rgb(path)

    assert _pixel(image, 0, 0) == (0, 0, 0)
    assert _pixel(image, 1, 0) == (128, 128, 128)
    assert _pixel(image, 0, 1) == (255, 255, 255)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "Cannot decode image"),
        (bytes(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8)), "not an image format"),
    ],
    ids=["zero-byte", "bad-jpeg-header", "random-bytes"],
)
def test_bad_file_raises_decode_error(tmp_path: Path, data: bytes, reason: str) -> None:
    path = imagegen.write_bytes(tmp_path / "bad.jpg", data)

    with pytest.raises(ImageDecodeError) as caught:
        load_rgb(path)
    assert str(path) in str(caught.value)
    assert reason in str(caught.value)
    assert caught.value.source_name == str(path)
    assert isinstance(caught.value, ValueError)


def test_truncated_jpeg_raises_decode_error(tmp_path: Path) -> None:
    whole = imagegen.write_jpeg(tmp_path / "whole.jpg", size=(64, 64), seed=1)
    path = imagegen.write_bytes(tmp_path / "cut.jpg", whole.read_bytes()[: whole.stat().st_size // 2])

    with pytest.raises(ImageDecodeError, match="truncated") as caught:
        load_rgb(path)
    assert "cut.jpg" in str(caught.value)


def test_truncated_png_raises_decode_error(tmp_path: Path) -> None:
    whole = imagegen.write_png(tmp_path / "whole.png", size=(64, 64), seed=1)
    path = imagegen.write_bytes(tmp_path / "cut.png", whole.read_bytes()[:300])

    with pytest.raises(ImageDecodeError, match="cut.png"):
        load_rgb(path)


def test_heic_says_not_supported(tmp_path: Path) -> None:
    header = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    path = imagegen.write_bytes(tmp_path / "IMG_0001.HEIC", header)

    with pytest.raises(ImageDecodeError) as caught:
        load_rgb(path)
    message = str(caught.value)
    assert "IMG_0001.HEIC" in message
    assert "HEIC" in message
    assert "not supported" in message
    assert "JPEG or PNG" in message


def test_heic_bytes_upload_says_not_supported() -> None:
    with pytest.raises(ImageDecodeError, match="HEIC/HEIF images are not supported"):
        load_rgb(b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic" + bytes(64))


def test_missing_file_raises_decode_error(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="does not exist"):
        load_rgb(tmp_path / "gone.jpg")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = imagegen.write_png(tmp_path / "bomb.png", size=(40, 40))
    # 1,600 pixels is between the patched limit and twice the limit, where Pillow itself only warns.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)

    with pytest.raises(ImageDecodeError, match="decompression-bomb limit") as caught:
        load_rgb(path)
    assert "bomb.png" in str(caught.value)


def test_decompression_bomb_far_over_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = imagegen.write_jpeg(tmp_path / "huge.jpg", size=(40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)

    with pytest.raises(ImageDecodeError, match="decompression-bomb limit") as caught:
        load_rgb(path)
    assert "huge.jpg" in str(caught.value)


def test_bomb_guard_left_in_place(tmp_path: Path) -> None:
    limit_before = Image.MAX_IMAGE_PIXELS
    load_rgb(imagegen.write_jpeg(tmp_path / "a.jpg"))

    assert Image.MAX_IMAGE_PIXELS == limit_before
    assert limit_before is not None


def test_min_side_drafts_large_jpeg(tmp_path: Path) -> None:
    path = imagegen.write_jpeg(tmp_path / "big.jpg", size=(400, 300), seed=3)

    full = load_rgb(path)
    small = load_rgb(path, min_side=64)

    assert full.size == (400, 300)
    assert small.size == (100, 75)
    assert min(small.size) >= 64


def test_min_side_larger_than_image_keeps_full_size(tmp_path: Path) -> None:
    path = imagegen.write_jpeg(tmp_path / "small.jpg", size=(50, 40))

    assert load_rgb(path, min_side=64).size == (50, 40)


def test_min_side_ignored_for_png(tmp_path: Path) -> None:
    path = imagegen.write_png(tmp_path / "big.png", size=(400, 300))

    assert load_rgb(path, min_side=64).size == (400, 300)


def test_min_side_keeps_exif_rotation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    path = imagegen.write_image(tmp_path / "rot.jpg", Image.new("RGB", (400, 200)), exif=exif.tobytes())

    assert load_rgb(path, min_side=32).size == (50, 100)


def test_invalid_min_side_raises(tmp_path: Path) -> None:
    path = imagegen.write_jpeg(tmp_path / "a.jpg")

    with pytest.raises(ValueError, match="min_side"):
        load_rgb(path, min_side=0)


def test_bytes_and_file_objects(tmp_path: Path) -> None:
    path = imagegen.write_png(tmp_path / "a.png", color=(5, 6, 7))
    data = path.read_bytes()

    assert _pixel(load_rgb(data)) == (5, 6, 7)
    assert _pixel(load_rgb(bytearray(data))) == (5, 6, 7)
    assert _pixel(load_rgb(io.BytesIO(data))) == (5, 6, 7)
    with path.open("rb") as stream:
        assert _pixel(load_rgb(stream)) == (5, 6, 7)
        assert not stream.closed
    assert _pixel(load_rgb(str(path))) == (5, 6, 7)
    assert _pixel(load_rgb(PurePath(path))) == (5, 6, 7)


def test_non_seekable_stream(tmp_path: Path) -> None:
    data = imagegen.write_png(tmp_path / "a.png", color=(5, 6, 7)).read_bytes()

    class PipeLike(io.RawIOBase):
        def __init__(self, payload: bytes) -> None:
            self._inner = io.BytesIO(payload)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, buffer) -> int:
            chunk = self._inner.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    assert _pixel(load_rgb(io.BufferedReader(PipeLike(data)))) == (5, 6, 7)


def test_bad_bytes_name_the_source() -> None:
    with pytest.raises(ImageDecodeError, match="<bytes>"):
        load_rgb(b"definitely not an image")


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "La", "CMYK", "YCbCr", "HSV",
                                  "I", "I;16", "F", "RGBX", "LAB"])
def test_pil_image_every_mode_to_rgb(mode: str) -> None:
    source = Image.new(mode, (5, 3))

    image = load_rgb(source)

    assert image.mode == "RGB"
    assert image.size == (5, 3)
    assert image is not source


def test_pil_image_with_exif_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    path = imagegen.write_image(tmp_path / "rot.jpg", Image.new("RGB", (30, 10)), exif=exif.tobytes())

    with Image.open(path) as opened:
        assert load_rgb(opened).size == (10, 30)


def test_numpy_shapes() -> None:
    gray = np.full((4, 6), 90, dtype=np.uint8)
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., :3] = (1, 2, 3)
    rgba[0, 0, 3] = 255

    assert load_rgb(gray).size == (6, 4)
    assert _pixel(load_rgb(gray)) == (90, 90, 90)
    assert _pixel(load_rgb(gray[:, :, None])) == (90, 90, 90)
    assert _pixel(load_rgb(np.dstack([gray, gray + 1, gray + 2]))) == (90, 91, 92)
    assert _pixel(load_rgb(rgba), 0, 0) == (1, 2, 3)
    assert _pixel(load_rgb(rgba), 1, 0) == BACKGROUND_RGB


def test_numpy_non_contiguous_view() -> None:
    pixels = np.zeros((4, 6, 3), dtype=np.uint8)
    pixels[:, :, 0] = 200

    assert _pixel(load_rgb(pixels[:, ::2])) == (200, 0, 0)
    assert _pixel(load_rgb(pixels[..., ::-1])) == (0, 0, 200)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.full((2, 2), 0.5, dtype=np.float32), 128),
        (np.full((2, 2), 1.0, dtype=np.float64), 255),
        (np.full((2, 2), 200.0, dtype=np.float32), 200),
        (np.full((2, 2), 32768, dtype=np.uint16), 128),
        (np.full((2, 2), 200, dtype=np.int64), 200),
        (np.full((2, 2), True), 255),
    ],
    ids=["float-half", "float-one", "float-0-255", "uint16", "int64-8-bit", "bool"],
)
def test_numpy_dtypes_scaled(values: np.ndarray, expected: int) -> None:
    assert _pixel(load_rgb(values)) == (expected, expected, expected)


def test_scale_to_uint8_stretches_out_of_range() -> None:
    values = np.array([[-1.0, 0.0, 3.0]])

    assert scale_to_uint8(values).tolist() == [[0, 64, 255]]
    assert scale_to_uint8(np.array([[np.nan, 1.0]])).tolist() == [[0, 255]]
    assert scale_to_uint8(np.array([[-5, 5]], dtype=np.int16)).tolist() == [[0, 255]]


@pytest.mark.parametrize("shape", [(3, 8, 8), (4, 10, 12)])
def test_numpy_channels_first_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ImageDecodeError, match=r"transpose\(1, 2, 0\)"):
        load_rgb(np.zeros(shape, dtype=np.uint8))


@pytest.mark.parametrize("shape", [(5,), (5, 5, 2), (2, 2, 2, 3), (0, 4)])
def test_numpy_bad_shape_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ImageDecodeError, match="expected HxW"):
        load_rgb(np.zeros(shape, dtype=np.uint8))


def test_unsupported_source_type() -> None:
    with pytest.raises(TypeError, match="int"):
        load_rgb(42)  # type: ignore[arg-type]


def test_is_readable_and_try_load(tmp_path: Path) -> None:
    good = imagegen.write_jpeg(tmp_path / "good.jpg")
    bad = imagegen.write_bytes(tmp_path / "bad.jpg", b"")

    assert is_readable(good)
    assert not is_readable(bad)
    image, reason = try_load_rgb(good)
    assert image is not None and reason is None
    image, reason = try_load_rgb(bad)
    assert image is None
    assert reason is not None and "bad.jpg" in reason


def test_png_exif_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    path = imagegen.write_image(tmp_path / "rot.png", Image.new("RGB", (30, 10)), exif=exif.tobytes())

    assert load_rgb(path).size == (10, 30)


def test_damaged_exif_keeps_image(tmp_path: Path) -> None:
    path = imagegen.write_image(tmp_path / "bad_exif.jpg", Image.new("RGB", (12, 8), RED), exif=b"Exif\x00\x00garbage")

    image = load_rgb(path)

    assert image.size == (12, 8)
    _assert_close(_pixel(image), RED, tolerance=6)
