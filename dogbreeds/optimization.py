"""Optimizer and learning-rate schedule of a training run."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from dogbreeds.config import TrainConfig

# Shortest warm-up in optimizer steps (unless warm-up is off or the run is shorter). With a few hundred images an
# epoch is only a handful of steps, and reaching the peak learning rate that fast can make the loss diverge.
MIN_WARMUP_STEPS = 50


def warmup_step_count(warmup_epochs: float, steps_per_epoch: int, total_steps: int) -> int:
    """Return the warm-up length in steps: warmup_epochs of steps, at least MIN_WARMUP_STEPS, at most total_steps.

    warmup_epochs == 0 turns the warm-up off.
    """
    if warmup_epochs <= 0:
        return 0
    steps = max(round(warmup_epochs * steps_per_epoch), MIN_WARMUP_STEPS)
    return min(steps, total_steps)


def cosine_with_warmup(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Return the LR multiplier per optimizer step: linear warm-up from 0, then cosine decay to 0.

    Step s of the warm-up uses (s + 1) / warmup_steps so the very first step already moves the weights.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        decay_steps = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Create SGD (momentum) or AdamW; weight decay applies to weight matrices and kernels only.

    Biases and normalization scales (1-D parameters) get no decay, because shrinking them only limits what
    BatchNorm can express.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]

    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
