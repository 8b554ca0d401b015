"""Test helpers that build small trained-looking run folders for the checkpoint and prediction tests."""

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from dogbreeds.checkpoint import MODEL_FILE, build_run_config, save_weights, write_run_config
from dogbreeds.models import create_model

CLASS_KEYS = ("n02085620-Chihuahua", "n02085936-Maltese_dog", "n02110958-pug")
CLASS_NAMES = ("Chihuahua", "Maltese dog", "pug")


def build_model(architecture: str = "resfcn18", image_size: int = 16, num_classes: int = 3, seed: int = 0) -> nn.Module:
    """Build a seeded model whose batch-norm statistics have moved away from their initial values."""
    torch.manual_seed(seed)
    model = create_model(architecture, num_classes, image_size)

    # A few training-mode passes update the running mean and variance, so a round trip that lost the buffers
    # would change the outputs.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, image_size, image_size) * 2.0 + 0.5)

    return model.eval()


def make_run(
    run_dir: Path,
    architecture: str = "resfcn18",
    image_size: int = 16,
    class_keys: Sequence[str] = CLASS_KEYS,
    class_names: Sequence[str] = CLASS_NAMES,
    seed: int = 0,
    metrics: dict | None = None,
    train_config: dict | None = None,
) -> nn.Module:
    """Write config.json and model.safetensors for a fresh model into ``run_dir`` and return the model."""
    model = build_model(architecture, image_size, len(class_keys), seed)
    config = build_run_config(
        model,
        class_keys=list(class_keys),
        class_names=list(class_names),
        train_config=train_config or {"arch": architecture, "epochs": 1},
        metrics=metrics or {},
    )
    write_run_config(run_dir, config)
    save_weights(run_dir / MODEL_FILE, model)
    return model
