"""Resuming a run: what comes from the run folder, what from the new request, and the restored counters."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dogbreeds.checkpoint import (
    CONFIG_FILE,
    HISTORY_FILE,
    LAST_FILE,
    OPTIMIZER_FILE,
    TRAINER_STATE_FILE,
    load_training_state,
    read_history,
    read_run_config,
)
from dogbreeds.config import RUN_DEFINING_FIELDS, TrainConfig


@dataclass
class TrainingProgress:
    """Counters of a run that trainer_state.json stores after each epoch, so a resumed run continues them."""

    epochs_completed: int = 0
    best_epoch: int = 0
    best_top1: float = -1.0
    epochs_since_best: int = 0
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epochs_completed,
            "best_epoch": self.best_epoch,
            "best_top1": self.best_top1,
            "epochs_since_best": self.epochs_since_best,
            "train_seconds": self.train_seconds,
        }


def merge_resume_config(saved: TrainConfig, requested: TrainConfig) -> TrainConfig:
    """Return the config to resume with: what the run learns from `saved`, how and how long from `requested`."""
    merged = dataclasses.replace(requested, extra=dict(saved.extra))
    for name in RUN_DEFINING_FIELDS:
        setattr(merged, name, getattr(saved, name))
    return merged


def load_resume_state(run_dir: Path) -> tuple[TrainConfig, dict[str, Any], list[dict]]:
    """Read config.json and history.json of a run folder to continue it, after checking its files exist."""
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"Resume folder {run_dir} does not exist. Pass the folder of an earlier run (it contains "
            f"config.json and last.safetensors), or leave out resume to start a new run."
        )

    missing = [name for name in (CONFIG_FILE, LAST_FILE, HISTORY_FILE, OPTIMIZER_FILE, TRAINER_STATE_FILE)
               if not (run_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Run folder {run_dir} cannot be resumed because {', '.join(missing)} is missing. Only runs with "
            f"at least one completed epoch, written by this package's trainer, can be continued."
        )

    saved_run = read_run_config(run_dir)
    saved_config = TrainConfig.from_dict(saved_run["train_config"])
    return saved_config, saved_run, read_history(run_dir)


def completed_epochs(run_dir: Path) -> int:
    """Return how many epochs a run folder completed, from trainer_state.json (0 when it is missing or unreadable).

    trainer_state.json is written after the weights and history of an epoch, so its count never runs ahead.
    """
    try:
        document = json.loads((run_dir / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
        return int(document["state"]["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def check_epochs_left(run_dir: Path, epochs: int, option: str = "epochs") -> None:
    """Raise ValueError when a run folder already completed `epochs` epochs, so resuming would train nothing.

    `option` is how the caller spells the setting in the message, for example "--epochs" on the command line.
    """
    done = completed_epochs(run_dir)
    if done < epochs:
        return
    raise ValueError(
        f"Run {run_dir} already completed {done} epochs; {option} {epochs} leaves nothing to train. Set "
        f"{option} to {done + 1} or more to continue it."
    )


def restore_progress(run_dir: Path, optimizer: torch.optim.Optimizer, scheduler: Any,
                      history: list[dict]) -> TrainingProgress:
    """Load the optimizer and scheduler state and the counters saved after the last completed epoch."""
    state = load_training_state(run_dir, optimizer, scheduler)
    completed = int(state["epoch"])
    return TrainingProgress(
        epochs_completed=completed,
        best_epoch=int(state["best_epoch"]),
        best_top1=float(state["best_top1"]),
        epochs_since_best=int(state["epochs_since_best"]),
        train_seconds=float(state["train_seconds"]),
        history=[entry for entry in history if entry["epoch"] <= completed],
    )


def check_same_classes(run_dir: Path, saved_keys: list[str], found_keys: list[str]) -> None:
    """Raise ValueError when the data's class folders differ from those the run was trained on."""
    if saved_keys == found_keys:
        return

    missing = sorted(set(saved_keys) - set(found_keys))
    added = sorted(set(found_keys) - set(saved_keys))
    raise ValueError(
        f"The image folder's classes differ from those of run {run_dir}: {len(found_keys)} classes found, "
        f"{len(saved_keys)} expected; missing {_preview(missing)}, new {_preview(added)}. Resume with the "
        f"folder the run was trained on, or start a new run."
    )


def _preview(names: list[str], limit: int = 5) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"
