"""Tests for the model registry: shapes, sizes, parameter and FLOP counts, pretrained loading."""

import logging
import pickle
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from dogbreeds import models
from dogbreeds.models import (
    DEFAULT_IMAGE_SIZE,
    MAX_STEM_PARAMETERS,
    MODEL_FAMILY,
    MODEL_NAMES,
    PretrainedWeightsError,
    check_image_size,
    count_parameters,
    create_model,
    flops_per_image,
    imagenet_weights_path,
    resfcn18_widths,
    unwrap_model,
    wants_channels_last,
)

# Smallest sizes each architecture accepts, to keep the tests fast on a CPU.
TINY_SIZE = {"custom_cnn": 32, "resnet18": 32, "resfcn18": 16}
NUM_CLASSES = 5


def test_tiny_sizes_cover_registry():
    assert set(TINY_SIZE) == set(MODEL_NAMES)
    assert set(MODEL_FAMILY) == set(MODEL_NAMES)
    assert set(DEFAULT_IMAGE_SIZE) == set(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shape_train_and_eval(name):
    torch.manual_seed(0)
    size = TINY_SIZE[name]
    model = create_model(name, NUM_CLASSES, size)
    batch = torch.randn(3, 3, size, size)

    model.train()
    assert model(batch).shape == (3, NUM_CLASSES)

    model.eval()
    with torch.inference_mode():
        single = model(batch[:1])
    assert single.shape == (1, NUM_CLASSES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_attributes(name):
    size = TINY_SIZE[name]
    model = create_model(name, NUM_CLASSES, size)

    assert model.architecture == name
    assert model.image_size == size
    assert model.fixed_input_size == (name == "resfcn18")
    assert wants_channels_last(model) == (MODEL_FAMILY[name] == "cnn")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_and_flop_counts(name):
    size = TINY_SIZE[name]
    model = create_model(name, NUM_CLASSES, size)
    model.train()

    assert count_parameters(model) == sum(parameter.numel() for parameter in model.parameters())
    assert flops_per_image(model, size) > 0
    assert model.training, "flops_per_image must restore training mode"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_default_image_size(name):
    if name == "resfcn18":
        # Building resfcn18 at its 64 px default allocates 32 M parameters; check the size rule only.
        check_image_size(name, DEFAULT_IMAGE_SIZE[name])
        return
    model = create_model(name, NUM_CLASSES)
    assert model.image_size == DEFAULT_IMAGE_SIZE[name]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_too_small_size_rejected(name):
    too_small = models.MIN_IMAGE_SIZE[name] - 1
    with pytest.raises(ValueError, match=f"{name} needs image_size >= {models.MIN_IMAGE_SIZE[name]}"):
        create_model(name, NUM_CLASSES, too_small)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as error:
        create_model("vgg16", NUM_CLASSES)
    message = str(error.value)
    assert "'vgg16'" in message
    for name in MODEL_NAMES:
        assert name in message


@pytest.mark.parametrize("bad", [0, 1, True, 2.0, "5"])
def test_invalid_num_classes_rejected(bad):
    with pytest.raises(ValueError, match="num_classes"):
        create_model("custom_cnn", bad, 32)


@pytest.mark.parametrize("bad", [32.0, "32", True, None])
def test_non_integer_size_rejected(bad):
    with pytest.raises(ValueError, match="image_size"):
        check_image_size("custom_cnn", bad)


def test_pretrained_only_for_resnet18():
    with pytest.raises(ValueError, match="only resnet18"):
        create_model("custom_cnn", NUM_CLASSES, 32, pretrained=True)


def test_custom_cnn_layers():
    model = create_model("custom_cnn", 7, 32)
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    pools = [module for module in model.modules() if isinstance(module, nn.AvgPool2d)]
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]

    assert [(conv.in_channels, conv.out_channels) for conv in convs] == [
        (3, 32), (32, 64), (64, 128), (128, 256), (256, 512)
    ]
    assert all(conv.kernel_size == (3, 3) for conv in convs)
    assert all(conv.stride == (1, 1) for conv in convs)
    assert all(conv.padding == (1, 1) for conv in convs)
    assert len(norms) == 5
    assert [(pool.kernel_size, pool.stride) for pool in pools] == [(2, 2)] * 5
    assert (model.fc1.in_features, model.fc1.out_features) == (512, 256)
    assert (model.fc.in_features, model.fc.out_features) == (256, 7)


def test_custom_cnn_any_size_from_32():
    model = create_model("custom_cnn", NUM_CLASSES, 32).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 45, 77)).shape == (1, NUM_CLASSES)


def test_custom_cnn_flops_match_hand_count():
    model = create_model("custom_cnn", NUM_CLASSES, 64)

    # A 3x3 conv at H x W with padding 1 and stride 1 does H * W * 9 * C_in * C_out multiply-accumulates.
    # Each 2x2 pool halves the side for the next block.
    channels = [3, 32, 64, 128, 256, 512]
    conv_macs = 0
    side = 64
    for c_in, c_out in zip(channels, channels[1:]):
        conv_macs += side * side * 9 * c_in * c_out
        side //= 2
    linear_macs = 512 * 256 + 256 * NUM_CLASSES

    # 3,538,944 in the first block, then 18,874,368 in each of the other four.
    assert conv_macs == 3_538_944 + 4 * 18_874_368
    assert flops_per_image(model, 64) == 2 * (conv_macs + linear_macs)


def test_resfcn18_widths_at_64():
    assert resfcn18_widths(64) == (12_288, 1_536, 768, 384, 192)


def test_resfcn18_layers_at_64():
    model = create_model("resfcn18", NUM_CLASSES, 64)
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    shapes = [(linear.in_features, linear.out_features) for linear in linears]

    assert len(linears) == 18
    assert shapes == [
        (12_288, 1_536),
        (1_536, 1_536), (1_536, 1_536), (1_536, 1_536), (1_536, 1_536),
        (1_536, 768), (768, 768), (768, 768), (768, 768),
        (768, 384), (384, 384), (384, 384), (384, 384),
        (384, 192), (192, 192), (192, 192), (192, 192),
        (192, NUM_CLASSES),
    ]

    weights = sum(c_in * c_out for c_in, c_out in shapes)
    head_bias = NUM_CLASSES
    # Each BatchNorm1d has a weight and a bias per feature: one after the stem, two per residual block.
    norm_parameters = 2 * (1_536 + 2 * 2 * (1_536 + 768 + 384 + 192))
    assert count_parameters(model) == weights + head_bias + norm_parameters
    assert count_parameters(model) == 32_209_349

    # Only matrix products count as FLOPs: 2 per multiply-accumulate.
    assert flops_per_image(model, 64) == 2 * weights


def test_resfcn18_identity_pooling_halves():
    block = models.ResidualLinearBlock(96, 48)
    assert isinstance(block.downsample, nn.AvgPool1d)
    assert block.downsample.kernel_size == (3,)
    assert block.downsample.stride == (2,)
    assert block.downsample.padding == (1,)
    assert block(torch.randn(4, 96)).shape == (4, 48)

    assert models.ResidualLinearBlock(48, 48).downsample is None
    with pytest.raises(ValueError, match="keeps or halves"):
        models.ResidualLinearBlock(96, 40)


def test_resfcn18_stem_limit():
    check_image_size("resfcn18", 96)
    assert resfcn18_widths(96)[0] * resfcn18_widths(96)[1] == 95_551_488

    with pytest.raises(ValueError) as error:
        check_image_size("resfcn18", 128)
    message = str(error.value)
    assert f"{MAX_STEM_PARAMETERS:,}" in message
    assert "image_size <= 96" in message


@pytest.mark.parametrize("size", [12, 20, 63])
def test_resfcn18_size_not_multiple_of_8(size):
    with pytest.raises(ValueError, match="multiple of 8"):
        create_model("resfcn18", NUM_CLASSES, size)


def test_resfcn18_wrong_input_size_at_forward():
    model = create_model("resfcn18", NUM_CLASSES, 16).eval()
    with pytest.raises(ValueError) as error:
        model(torch.randn(1, 3, 24, 24))
    message = str(error.value)
    assert "16x16" in message
    assert "24x24" in message


def test_resfcn18_single_image_training_rejected():
    model = create_model("resfcn18", NUM_CLASSES, 16).train()
    with pytest.raises(ValueError, match="batch of at least 2"):
        model(torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize("name", ["custom_cnn", "resnet18"])
def test_cnn_too_small_input_at_forward(name):
    model = create_model(name, NUM_CLASSES, 32).eval()
    with pytest.raises(ValueError, match="at least 32x32"):
        model(torch.randn(1, 3, 16, 40))


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 1, 32, 32), (1, 4, 32, 32)])
def test_non_rgb_batch_rejected(shape):
    model = create_model("custom_cnn", NUM_CLASSES, 32).eval()
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        model(torch.randn(*shape))


def test_unwrap_data_parallel():
    model = create_model("custom_cnn", NUM_CLASSES, 32)
    wrapped = nn.DataParallel(model)
    assert unwrap_model(wrapped) is model
    assert wants_channels_last(wrapped)
    assert count_parameters(wrapped) == count_parameters(model)


def _point_hub_cache_at(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)


def _forbid_download(monkeypatch):
    def fail(url, *args, **kwargs):
        raise AssertionError(f"unexpected download of {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)


def test_weights_path_follows_torch_home(tmp_path, monkeypatch):
    _point_hub_cache_at(tmp_path, monkeypatch)
    assert imagenet_weights_path() == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"


def test_pretrained_loads_cached_weights(tmp_path, monkeypatch, caplog):
    _point_hub_cache_at(tmp_path, monkeypatch)
    _forbid_download(monkeypatch)
    torch.manual_seed(1)
    reference = torchvision.models.resnet18().state_dict()
    # torch.hub compares the SHA-256 prefix in the file name only while downloading, so a file already cached
    # under the expected name is read as is. The forbidden download proves that no download happens.
    path = imagenet_weights_path()
    path.parent.mkdir(parents=True)
    torch.save(reference, path)

    with caplog.at_level(logging.WARNING, logger="dogbreeds.models"):
        model = create_model("resnet18", NUM_CLASSES, 32, pretrained=True)

    loaded = model.state_dict()
    backbone_keys = [key for key in reference if not key.startswith("fc.")]
    assert len(backbone_keys) > 100
    for key in backbone_keys:
        assert torch.equal(loaded[key], reference[key]), key
    assert model.fc.weight.shape == (NUM_CLASSES, 512)
    assert model.fc.bias.shape == (NUM_CLASSES,)
    assert "ImageNet" in caplog.text
    assert "optimistic" in caplog.text


def test_pretrained_offline_error(tmp_path, monkeypatch):
    _point_hub_cache_at(tmp_path, monkeypatch)

    def offline(url, destination, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)

    with pytest.raises(PretrainedWeightsError) as error:
        create_model("resnet18", NUM_CLASSES, 32, pretrained=True)
    message = str(error.value)
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message


class _CreatesMarker:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pretrained_cache_never_unpickles_code(tmp_path, monkeypatch):
    _point_hub_cache_at(tmp_path, monkeypatch)
    _forbid_download(monkeypatch)
    marker = tmp_path / "code-ran"
    path = imagenet_weights_path()
    path.parent.mkdir(parents=True)
    with open(path, "wb") as file:
        pickle.dump({"conv1.weight": _CreatesMarker(marker)}, file, protocol=2)

    with pytest.raises(PretrainedWeightsError, match="Delete the file"):
        create_model("resnet18", NUM_CLASSES, 32, pretrained=True)
    assert not marker.exists()
