"""Tests for dogbreeds.config.TrainConfig: defaults, resolution, validation and the dict round trip."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from dogbreeds.config import TrainConfig
from dogbreeds.models import DEFAULT_IMAGE_SIZE, MODEL_NAMES


def test_defaults() -> None:
    config = TrainConfig()

    assert config.train_dir == Path("images/images")
    assert config.arch == "custom_cnn"
    assert config.image_size is None
    assert config.epochs == 10
    assert config.batch_size == 64
    assert config.optimizer == "sgd"
    assert config.device == "auto"
    assert config.out == Path("checkpoints")
    assert config.val_fraction == 0.2
    assert config.use_cache is True
    assert config.hflip is True


def test_string_paths_become_paths() -> None:
    config = TrainConfig(train_dir="a/b", test_dir="c", resume="runs/x", split_lists="lists")

    assert config.train_dir == Path("a/b")
    assert config.test_dir == Path("c")
    assert config.resume == Path("runs/x")
    assert config.split_lists == Path("lists")


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_default_image_size_per_arch(arch: str) -> None:
    assert TrainConfig(arch=arch).resolved_image_size() == DEFAULT_IMAGE_SIZE[arch]
    assert TrainConfig(arch=arch, image_size=48).resolved_image_size() == 48


def test_default_lr_sgd_scales_with_batch() -> None:
    assert TrainConfig(batch_size=64).default_lr() == pytest.approx(0.05)
    assert TrainConfig(batch_size=128).default_lr() == pytest.approx(0.1)
    assert TrainConfig(batch_size=32).default_lr(world_size=2) == pytest.approx(0.05)


def test_default_lr_adamw_and_pretrained() -> None:
    assert TrainConfig(optimizer="adamw", batch_size=256).default_lr() == pytest.approx(1e-3)
    assert TrainConfig(optimizer="adamw", pretrained=True).default_lr() == pytest.approx(1e-4)
    assert TrainConfig(arch="resnet18", pretrained=True).default_lr() == pytest.approx(0.005)


def test_resolved_fills_size_and_lr() -> None:
    config = TrainConfig(arch="resfcn18")
    resolved = config.resolved()

    assert resolved.image_size == DEFAULT_IMAGE_SIZE["resfcn18"]
    assert resolved.lr == pytest.approx(0.05)
    assert config.image_size is None
    assert config.lr is None
    assert TrainConfig(lr=0.3).resolved().lr == 0.3


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"arch": "vgg"}, "Unknown architecture 'vgg'"),
        ({"epochs": 0}, "Epochs must be at least 1, got 0"),
        ({"epochs": -3}, "got -3"),
        ({"batch_size": 1}, "Batch size must be at least 2"),
        ({"lr": 0.0}, "Learning rate must be a positive number"),
        ({"lr": float("nan")}, "Learning rate"),
        ({"optimizer": "adam"}, "Unknown optimizer 'adam'"),
        ({"momentum": 1.0}, "Momentum must be in [0, 1)"),
        ({"weight_decay": -1e-4}, "Weight decay"),
        ({"warmup_epochs": -1}, "Warm-up"),
        ({"label_smoothing": 1.0}, "Label smoothing"),
        ({"val_fraction": 0.0}, "Validation fraction must be between 0 and 1"),
        ({"val_fraction": 1.0}, "got 1.0"),
        ({"min_scale": 0.0}, "Minimum crop scale"),
        ({"min_scale": 1.5}, "Minimum crop scale"),
        ({"workers": -1}, "Workers"),
        ({"patience": 0}, "Patience must be at least 1"),
        ({"max_images": 1}, "Max images"),
        ({"seed": -1}, "Seed"),
        ({"run_name": "../escape"}, "plain folder name"),
        ({"image_size": 0}, "Image size must be a positive"),
        ({"arch": "resfcn18", "image_size": 20}, "multiple of 8"),
        ({"arch": "custom_cnn", "image_size": 16}, "custom_cnn needs image_size >= 32"),
    ],
)
def test_validate_rejects(changes: dict, expected: str) -> None:
    with pytest.raises(ValueError) as caught:
        TrainConfig(**changes).validate()
    assert expected in str(caught.value)


def test_validate_accepts_tiny_sizes() -> None:
    TrainConfig(arch="resfcn18", image_size=16).validate()
    TrainConfig(arch="custom_cnn", image_size=32, patience=1, max_images=2).validate()


def test_dict_round_trip_is_json() -> None:
    config = TrainConfig(train_dir="data/dogs", test_dir="data/test", arch="resfcn18", image_size=16, lr=0.01,
                         patience=3, resume="runs/r1", max_images=100, hflip=False)
    data = config.to_dict()

    assert data["train_dir"] == "data/dogs"
    assert data["resume"] == "runs/r1"
    assert "extra" not in data
    assert TrainConfig.from_dict(json.loads(json.dumps(data))) == config


def test_from_dict_keeps_unknown_keys(caplog: pytest.LogCaptureFixture) -> None:
    data = TrainConfig().to_dict()
    data["ema_decay"] = 0.999

    with caplog.at_level(logging.WARNING, logger="dogbreeds.config"):
        config = TrainConfig.from_dict(data)

    assert config.extra == {"ema_decay": 0.999}
    assert config.to_dict()["ema_decay"] == 0.999
    assert "ema_decay" in caplog.text
