"""Tests for dogbreeds.transforms: sizes, crops, normalisation, evaluation preprocessing and batch augmentation."""

from __future__ import annotations

import pickle

import imagegen
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dogbreeds.decode import load_rgb
from dogbreeds.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchAugment,
    center_crop,
    fit_square,
    normalize,
    preprocess_eval,
    resize_size,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _three_bands(width: int, height: int) -> Image.Image:
    """Return an image cut into three bands along its long side: red, green (the middle square), blue."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    if width >= height:
        margin = (width - height) // 2
        pixels[:, :margin] = RED
        pixels[:, margin : margin + height] = GREEN
        pixels[:, margin + height :] = BLUE
    else:
        margin = (height - width) // 2
        pixels[:margin] = RED
        pixels[margin : margin + width] = GREEN
        pixels[margin + width :] = BLUE
    return Image.fromarray(pixels)


def _normalized_value(level: int, channel: int) -> float:
    return (level / 255.0 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]


@pytest.mark.parametrize(("image_size", "expected"), [(64, 73), (128, 146), (224, 256), (8, 9), (1, 1)])
def test_resize_size_values(image_size: int, expected: int) -> None:
    assert resize_size(image_size) == expected


@pytest.mark.parametrize("bad", [0, -4, 2.5, "64", True])
def test_resize_size_rejects_invalid(bad: object) -> None:
    with pytest.raises(ValueError, match="image_size"):
        resize_size(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("width", "height"), [(40, 20), (20, 40), (30, 30)])
def test_fit_square_keeps_centre(width: int, height: int) -> None:
    short = min(width, height)
    square = fit_square(_three_bands(width, height), short)

    assert square.shape == (short, short, 3)
    assert square.dtype == np.uint8
    assert (square == GREEN).all()


@pytest.mark.parametrize(("width", "height"), [(37, 21), (21, 37)])
def test_fit_square_scales_short_side(width: int, height: int) -> None:
    square = fit_square(_three_bands(width, height), 12)

    assert square.shape == (12, 12, 3)
    # Resampling blurs the band edges, but the centre stays the middle band.
    assert tuple(square[6, 6]) == GREEN
    assert square.flags.writeable


def test_fit_square_rejects_other_modes() -> None:
    with pytest.raises(ValueError, match="RGB"):
        fit_square(Image.new("L", (10, 10)), 8)


def test_center_crop_offsets() -> None:
    grid = torch.arange(7 * 9).reshape(1, 7, 9)

    crop = center_crop(grid, 4)

    # Offsets are (7 - 4) // 2 = 1 row and (9 - 4) // 2 = 2 columns.
    assert crop.shape == (1, 4, 4)
    assert crop[0, 0, 0].item() == 1 * 9 + 2
    assert torch.equal(crop, grid[:, 1:5, 2:6])


def test_center_crop_batch_and_full_size() -> None:
    batch = torch.rand(2, 3, 5, 5)

    assert torch.equal(center_crop(batch, 5), batch)
    assert center_crop(batch, 3).shape == (2, 3, 3, 3)


def test_center_crop_rejects_larger_size() -> None:
    with pytest.raises(ValueError, match="center_crop size"):
        center_crop(torch.zeros(3, 5, 8), 6)


def test_normalize_values() -> None:
    pixels = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1).expand(3, 3, 1).contiguous()

    result = normalize(pixels)

    assert result.dtype == torch.float32
    for channel in range(3):
        for column, level in enumerate((0, 128, 255)):
            assert result[channel, column, 0].item() == pytest.approx(_normalized_value(level, channel), abs=1e-6)


def test_normalize_same_alone_or_batched() -> None:
    batch = torch.randint(0, 256, (5, 3, 6, 6), dtype=torch.uint8)

    batched = normalize(batch)

    for index in range(5):
        assert torch.equal(batched[index], normalize(batch[index]))


def test_normalize_accepts_float_levels() -> None:
    levels = torch.randint(0, 256, (3, 4, 4), dtype=torch.uint8)

    assert torch.equal(normalize(levels.float()), normalize(levels))


def test_normalize_channels_last_same_bits() -> None:
    batch = torch.randint(0, 256, (4, 3, 5, 7), dtype=torch.uint8)
    channels_last = batch.contiguous(memory_format=torch.channels_last)

    result = normalize(channels_last)

    assert result.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(result, normalize(batch))
    assert torch.equal(channels_last, batch)


def test_normalize_rejects_wrong_channels() -> None:
    with pytest.raises(ValueError, match="shaped"):
        normalize(torch.zeros(4, 5, 5, dtype=torch.uint8))


def test_preprocess_eval_matches_steps(tmp_path) -> None:
    path = imagegen.write_jpeg(tmp_path / "dog.jpg", size=(40, 27), seed=3)
    side = resize_size(16)

    expected_square = fit_square(load_rgb(path, min_side=side), side)
    expected = normalize(center_crop(torch.from_numpy(expected_square).permute(2, 0, 1), 16))
    result = preprocess_eval(path, 16)

    assert result.shape == (3, 16, 16)
    assert result.dtype == torch.float32
    assert result.is_contiguous()
    assert torch.equal(result, expected)


def test_preprocess_eval_accepts_sources(tmp_path) -> None:
    path = imagegen.write_png(tmp_path / "dog.png", size=(30, 20), seed=4)
    from_path = preprocess_eval(path, 12)

    assert torch.equal(preprocess_eval(path.read_bytes(), 12), from_path)
    assert torch.equal(preprocess_eval(Image.open(path), 12), from_path)
    assert torch.equal(preprocess_eval(np.asarray(Image.open(path)), 12), from_path)
    assert torch.equal(preprocess_eval(str(path), 12), from_path)


def test_augment_output_shape_and_range() -> None:
    batch = torch.randint(0, 256, (6, 3, 18, 18), dtype=torch.uint8)

    result = BatchAugment(16)(batch, torch.Generator().manual_seed(0))

    low = min(_normalized_value(0, channel) for channel in range(3))
    high = max(_normalized_value(255, channel) for channel in range(3))
    assert result.shape == (6, 3, 16, 16)
    assert result.dtype == torch.float32
    assert torch.isfinite(result).all()
    assert result.min().item() >= low - 1e-5
    assert result.max().item() <= high + 1e-5


def test_augment_constant_image_stays_constant() -> None:
    batch = torch.full((4, 3, 18, 18), 200, dtype=torch.uint8)

    result = BatchAugment(16)(batch, torch.Generator().manual_seed(1))

    for channel in range(3):
        expected = torch.full((4, 16, 16), _normalized_value(200, channel))
        assert torch.allclose(result[:, channel], expected, atol=1e-5)


def test_augment_same_seed_same_result() -> None:
    batch = torch.randint(0, 256, (8, 3, 20, 20), dtype=torch.uint8)
    augment = BatchAugment(16)

    first = augment(batch, torch.Generator().manual_seed(42))
    second = augment(batch, torch.Generator().manual_seed(42))
    other = augment(batch, torch.Generator().manual_seed(43))

    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_augment_crop_boxes_follow_ranges() -> None:
    augment = BatchAugment(16, min_scale=0.3)

    boxes = augment.sample_boxes(2000, 100, 100, torch.Generator().manual_seed(0))

    # Sizes are rounded to whole pixels, so area and ratio may pass their range by a rounding step.
    widths = (boxes[:, 2] - boxes[:, 0]).double()
    heights = (boxes[:, 3] - boxes[:, 1]).double()
    area_fractions = widths * heights / 10_000
    assert boxes.dtype == torch.int64
    assert boxes.min().item() >= 0
    assert boxes[:, 2].max().item() <= 100
    assert boxes[:, 3].max().item() <= 100
    assert area_fractions.min().item() >= 0.3 - 0.02
    assert area_fractions.max().item() <= 1.0
    assert (widths / heights).min().item() >= 3 / 4 - 0.02
    assert (widths / heights).max().item() <= 4 / 3 + 0.03
    assert boxes[:, 0].min().item() == 0
    assert (100 - boxes[:, 2]).min().item() == 0


def test_augment_crop_boxes_vary_with_seed() -> None:
    augment = BatchAugment(16)

    first = augment.sample_boxes(8, 20, 20, torch.Generator().manual_seed(0))
    repeat = augment.sample_boxes(8, 20, 20, torch.Generator().manual_seed(0))
    other = augment.sample_boxes(8, 20, 20, torch.Generator().manual_seed(1))

    assert torch.equal(first, repeat)
    assert not torch.equal(first, other)


def test_augment_wide_image_falls_back_to_centre() -> None:
    augment = BatchAugment(8, min_scale=0.99)

    boxes = augment.sample_boxes(50, 10, 40, torch.Generator().manual_seed(0))

    # No crop of 99 % of the area fits a 4:1 image, so every box is the largest 4:3 crop, 13 x 10, centred.
    assert boxes.tolist() == [[13, 0, 26, 10]] * 50


def test_augment_flip_varies_with_seed() -> None:
    # With min_scale=1 every crop is the evaluation crop, so the outputs differ only by the flip.
    batch = torch.randint(0, 256, (32, 3, 9, 9), dtype=torch.uint8)
    plain = BatchAugment(8, min_scale=1.0, hflip=False)(batch, torch.Generator().manual_seed(0))
    flipping = BatchAugment(8, min_scale=1.0, hflip=True)

    first = flipping(batch, torch.Generator().manual_seed(0))
    second = flipping(batch, torch.Generator().manual_seed(5))

    first_flipped = [not torch.allclose(first[i], plain[i]) for i in range(32)]
    second_flipped = [not torch.allclose(second[i], plain[i]) for i in range(32)]
    for index in range(32):
        expected = plain[index].flip(-1) if first_flipped[index] else plain[index]
        assert torch.allclose(first[index], expected, atol=1e-5)
    assert 0 < sum(first_flipped) < 32
    assert first_flipped != second_flipped


@pytest.mark.parametrize("side", [8, 9, 12])
def test_augment_evaluation_crop_matches_per_image_resize(side: int) -> None:
    # With min_scale=1 the batched crop-and-flip shortcut must give the bits of the general path: each image
    # resized from its box on its own, then flipped by the same draw.
    batch = torch.randint(0, 256, (20, 3, side, side), dtype=torch.uint8)
    augment = BatchAugment(8, min_scale=1.0, hflip=True)

    result = augment(batch, torch.Generator().manual_seed(7))

    generator = torch.Generator().manual_seed(7)
    boxes = augment.sample_boxes(20, side, side, generator).tolist()
    flips = (torch.rand(20, generator=generator) < 0.5).tolist()
    expected = []
    for index, (left, top, right, bottom) in enumerate(boxes):
        window = batch[index : index + 1, :, top:bottom, left:right]
        resized = F.interpolate(window, size=(8, 8), mode="bilinear", antialias=True, align_corners=False)[0]
        expected.append(resized.flip(-1) if flips[index] else resized)
    assert torch.equal(result, normalize(torch.stack(expected)))
    assert 0 < sum(flips) < 20


def _largest_level_step() -> float:
    """Return the largest change in a normalized value that one uint8 level makes, over the three channels."""
    return max(_normalized_value(1, channel) - _normalized_value(0, channel) for channel in range(3))


def _torch_crops(batch: torch.Tensor, augment: BatchAugment, seed: int) -> tuple[torch.Tensor, list[list[int]]]:
    """Return the uint8 crops that torch's antialiased bilinear resize makes from augment's boxes and flips."""
    generator = torch.Generator().manual_seed(seed)
    count, _, height, width = batch.shape
    boxes = augment.sample_boxes(count, height, width, generator).tolist()
    flips = (torch.rand(count, generator=generator) < 0.5).tolist()
    size = augment.image_size
    crops = []
    for index, (left, top, right, bottom) in enumerate(boxes):
        window = batch[index : index + 1, :, top:bottom, left:right]
        resized = F.interpolate(window, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        crops.append(resized.flip(-1) if flips[index] else resized)
    return torch.stack(crops), boxes


def test_augment_enlarged_crops_match_torch_resize() -> None:
    # On a 20 px square with min_scale 0.2, most boxes are at most 16 px on both axes. Those crops are enlarged,
    # where OpenCV's and torch's bilinear resizes agree within one level of rounding.
    batch = torch.randint(0, 256, (40, 3, 20, 20), dtype=torch.uint8)
    augment = BatchAugment(16, min_scale=0.2)

    result = augment(batch, torch.Generator().manual_seed(3))

    expected, boxes = _torch_crops(batch, augment, seed=3)
    enlarged = [i for i, (left, top, right, bottom) in enumerate(boxes) if right - left <= 16 and bottom - top <= 16]
    level = _largest_level_step()
    difference = (result - normalize(expected)).abs()
    assert len(enlarged) >= 10
    assert difference[enlarged].max().item() <= level + 1e-5
    assert result.is_contiguous(memory_format=torch.channels_last)


def test_augment_shrunk_crops_close_to_torch_resize() -> None:
    # Smooth ramps, so that the area filter and torch's antialiased filter may differ only by rounding.
    rows = torch.arange(24, dtype=torch.float32).view(24, 1)
    columns = torch.arange(24, dtype=torch.float32).view(1, 24)
    ramp = torch.stack([(rows * 10).expand(24, 24), (columns * 10).expand(24, 24), rows * 5 + columns * 5])
    ramp = ramp.to(torch.uint8)
    batch = ramp.expand(30, 3, 24, 24).contiguous()
    augment = BatchAugment(16, min_scale=0.5)

    result = augment(batch, torch.Generator().manual_seed(4))

    expected, boxes = _torch_crops(batch, augment, seed=4)
    shrunk = [i for i, (left, top, right, bottom) in enumerate(boxes) if right - left > 16 and bottom - top > 16]
    level = _largest_level_step()
    assert len(shrunk) >= 5
    assert (result - normalize(expected)).abs().max().item() <= 3 * level


def test_augment_same_crops_in_either_memory_format() -> None:
    batch = torch.randint(0, 256, (12, 3, 19, 19), dtype=torch.uint8)
    augment = BatchAugment(16)

    contiguous = augment(batch, torch.Generator().manual_seed(5))
    channels_last = augment(batch.contiguous(memory_format=torch.channels_last), torch.Generator().manual_seed(5))

    assert torch.equal(contiguous, channels_last)


def test_augment_without_flip_keeps_orientation() -> None:
    batch = torch.zeros((16, 3, 9, 9), dtype=torch.uint8)
    batch[..., :4] = 255  # left side bright

    result = BatchAugment(8, min_scale=1.0, hflip=False)(batch, torch.Generator().manual_seed(0))

    assert (result[..., 0] > result[..., -1]).all()


def test_augment_pickles() -> None:
    augment = BatchAugment(24, min_scale=0.5, hflip=False)

    copy = pickle.loads(pickle.dumps(augment))

    assert copy.image_size == 24
    assert copy.min_scale == 0.5
    assert copy.hflip is False


def test_augment_empty_batch() -> None:
    result = BatchAugment(8)(torch.zeros((0, 3, 9, 9), dtype=torch.uint8))

    assert result.shape == (0, 3, 8, 8)


@pytest.mark.parametrize(
    "batch",
    [torch.zeros((2, 3, 9, 9), dtype=torch.float32), torch.zeros((3, 9, 9), dtype=torch.uint8),
     torch.zeros((2, 1, 9, 9), dtype=torch.uint8)],
)
def test_augment_rejects_bad_batches(batch: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="BatchAugment expected"):
        BatchAugment(8)(batch)


@pytest.mark.parametrize("min_scale", [0.0, -0.1, 1.5])
def test_augment_rejects_bad_min_scale(min_scale: float) -> None:
    with pytest.raises(ValueError, match="min_scale"):
        BatchAugment(8, min_scale=min_scale)


def test_augment_full_scale_equals_evaluation_crop() -> None:
    batch = torch.randint(0, 256, (6, 3, 37, 37), dtype=torch.uint8)

    trained = BatchAugment(32, min_scale=1.0, hflip=False)(batch, torch.Generator().manual_seed(0))

    assert torch.equal(trained, normalize(center_crop(batch, 32)))
