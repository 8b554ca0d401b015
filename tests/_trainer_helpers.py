"""Shared pieces of the trainer, CLI, evaluation, comparison and distributed tests.

The data sets are tiny generated colour classes (imagegen), learnable by a small model in an epoch or two.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from pathlib import Path

import imagegen
import pytest
import torch
from torch import nn

from dogbreeds import trainer
from dogbreeds.config import TrainConfig

CLASS_NAMES = ("n02085620-Chihuahua", "n02085936-Maltese_dog", "n02088364-beagle")


def make_dataset(root: Path, images_per_class: int = 6, classes: tuple[str, ...] = CLASS_NAMES,
                 size: tuple[int, int] = (24, 24)) -> Path:
    """Write `images_per_class` noisy solid-colour JPEGs per class under root and return root."""
    imagegen.make_class_tree(root, {name: images_per_class for name in classes}, size=size)
    return root


def tiny_config(data_dir: Path, work_dir: Path, **changes) -> TrainConfig:
    """Return a TrainConfig for a 16 px resfcn18 on the CPU that writes under work_dir."""
    config = TrainConfig(
        train_dir=data_dir,
        arch="resfcn18",
        image_size=16,
        epochs=2,
        batch_size=4,
        device="cpu",
        workers=0,
        out=work_dir / "runs",
        cache_dir=work_dir / "cache",
    )
    return dataclasses.replace(config, **changes)


class BatchRecorder:
    """Wrap trainer.create_model so each training forward pass records its batch size."""

    def __init__(self) -> None:
        self.train_batches: list[int] = []
        self.eval_batches: list[int] = []

    def install(self, monkeypatch) -> "BatchRecorder":
        original = trainer.create_model

        def create_and_hook(*args, **kwargs) -> nn.Module:
            model = original(*args, **kwargs)
            model.register_forward_pre_hook(self._record)
            return model

        monkeypatch.setattr(trainer, "create_model", create_and_hook)
        return self

    def _record(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        target = self.train_batches if module.training else self.eval_batches
        target.append(int(inputs[0].shape[0]))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def restore_package_logging():
    """Undo the setup_logging() of a CLI main(), so caplog in later tests still captures dogbreeds records.

    setup_logging() stops the package logger from propagating to the root logger, where caplog listens. Import
    this fixture into a test module to apply it to every test there.
    """
    package_logger = logging.getLogger("dogbreeds")
    handlers = list(package_logger.handlers)
    yield
    for handler in list(package_logger.handlers):
        if handler not in handlers:
            package_logger.removeHandler(handler)
    package_logger.propagate = True
    package_logger.setLevel(logging.NOTSET)
