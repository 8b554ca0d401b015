"""fit(): train one model on one image folder and write the run folder, with progress events and a stop check.

The CLI (`python -m dogbreeds.train`), torchrun, the Gradio app and the tests all train through fit().
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dogbreeds import distributed
from dogbreeds.checkpoint import (
    CONFIG_FILE,
    HISTORY_FILE,
    LAST_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    TRAINER_STATE_FILE,
    build_run_config,
    load_training_state,
    read_history,
    read_run_config,
    read_weights,
    save_training_state,
    save_weights,
    write_history,
    write_run_config,
)
from dogbreeds.config import RUN_DEFINING_FIELDS, TrainConfig
from dogbreeds.distributed import DistContext
from dogbreeds.metrics import ClassificationTotals, format_epoch_line
from dogbreeds.models import create_model, flops_per_image, wants_channels_last
from dogbreeds.runtime import resolve_device

logger = logging.getLogger(__name__)

# A batch event goes out every this many batches, plus one for the last batch of each epoch.
BATCH_EVENT_INTERVAL = 5



@dataclass
class TrainEvent:
    """One progress report from fit(). Epochs and batches count from 1."""

    kind: str                      # "start" | "batch" | "epoch" | "end"
    epoch: int
    num_epochs: int
    batch: int = 0
    num_batches: int = 0
    loss: float | None = None      # batch events: mean training loss of the epoch so far
    metrics: dict | None = None    # epoch events: the history entry; end events: the best epoch's entry
    message: str = ""              # epoch: the log line; start: the data split; end: finished/stopped/early stopped
    run_dir: Path | None = None


@dataclass
class FitResult:
    """Outcome of fit(). `run_dir` does not exist when the run stopped before its first epoch completed."""

    run_dir: Path
    history: list[dict]
    best: dict
    stopped: bool
    early_stopped: bool


@dataclass
class _Progress:
    """Counters that a resumed run restores from trainer_state.json."""

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


class _StopRequested(Exception):
    """Raised inside an epoch when should_stop() returned True, to leave the batch loop at once."""


def fit(
    config: TrainConfig,
    on_event: Callable[[TrainEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FitResult:
    """Train `config.arch` on `config.train_dir` and write the run folder after every completed epoch.

    on_event receives a "start" event, a "batch" event every few batches, an "epoch" event per completed epoch
    and one "end" event. should_stop is called after every batch. Once it returns True, the run ends within one
    batch and keeps the files of the last completed epoch (FitResult.stopped is True).

    With config.resume set, training continues the run in that folder after its last completed epoch, using
    the run's own architecture, split and optimizer settings; epochs, patience, device and data locations come
    from `config`. Under torchrun (WORLD_SIZE > 1) every process calls fit(); rank 0 alone writes files and
    sends events.

    Raises ValueError for invalid settings or a missing device, FileNotFoundError for a missing resume folder,
    and the data layer's errors for unusable image folders.
    """
    device = resolve_device(config.device)
    context = distributed.init_distributed(device)
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)

    try:
        run = _TrainingRun(config, device, context, on_event, should_stop)
        return run.run()
    finally:
        distributed.shutdown(context)


def merge_resume_config(saved: TrainConfig, requested: TrainConfig) -> TrainConfig:
    """Return the config to resume with: what the run learns from `saved`, how and how long from `requested`."""
    merged = dataclasses.replace(requested, extra=dict(saved.extra))
    for name in RUN_DEFINING_FIELDS:
        setattr(merged, name, getattr(saved, name))
    return merged


def default_run_name(arch: str, now: datetime | None = None) -> str:
    """Return "<arch>-YYYYmmdd-HHMMSS" for the current local time."""
    return f"{arch}-{(now or datetime.now()).strftime('%Y%m%d-%H%M%S')}"


def _unique_run_dir(out: Path, name: str) -> Path:
    """Return out/name, or out/name-2, -3, ... when a run of that name already exists."""
    candidate = out / name
    suffix = 2
    while candidate.exists():
        candidate = out / f"{name}-{suffix}"
        suffix += 1
    return candidate


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


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Return bf16 autocast on CUDA; float32 elsewhere (CPU autocast is slower for these small models)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _TrainingRun:
    """The state of one fit() call; methods follow the order of a run."""

    def __init__(
        self,
        config: TrainConfig,
        device: torch.device,
        context: DistContext,
        on_event: Callable[[TrainEvent], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.device = device
        self.context = context
        self.on_event = on_event if context.is_main else None
        self.should_stop = should_stop
        self.progress = _Progress()
        self.saved_run: dict[str, Any] | None = None
        self.saved_history: list[dict] = []
        self.config, self.run_dir = self._resolve_config(config)

    # --- set-up -------------------------------------------------------------------------------------------

    def _resolve_config(self, requested: TrainConfig) -> tuple[TrainConfig, Path]:
        """Validate the settings and pick the run folder (the resume folder or a new unique name)."""
        requested.validate()

        if requested.resume is None:
            config = requested.resolved(self.context.world_size)
            name = config.run_name or default_run_name(config.arch)
            run_dir = _unique_run_dir(config.out, name) if config.run_name is None else config.out / name
            if config.run_name is not None and (run_dir / "config.json").exists():
                raise FileExistsError(
                    f"Run folder {run_dir} already contains a run. Choose another run name, or continue "
                    f"that run with resume={str(run_dir)!r}."
                )
            run_dir = distributed.broadcast_from_main(self.context, run_dir)
            return config, run_dir

        run_dir = Path(requested.resume)
        saved_config, self.saved_run, self.saved_history = _load_resume_state(run_dir)
        config = merge_resume_config(saved_config, requested)
        config.resume = run_dir
        config.out = run_dir.parent
        config.run_name = run_dir.name
        if Path(saved_config.train_dir) != Path(config.train_dir):
            logger.warning("Resuming with images from %s; the run started with %s", config.train_dir,
                           saved_config.train_dir)
        return config, run_dir

    def _prepare_data(self) -> Any:
        """Scan, validate, split and cache the images; rank 0 builds the cache before the others read it."""
        from dogbreeds.data import DataSettings, prepare_data

        settings = DataSettings(
            train_dir=self.config.train_dir,
            test_dir=self.config.test_dir,
            image_size=self.config.resolved_image_size(),
            val_fraction=self.config.val_fraction,
            seed=self.config.seed,
            use_cache=self.config.use_cache,
            cache_dir=self.config.cache_dir,
            workers=self.config.workers,
            split_lists=self.config.split_lists,
            max_images=self.config.max_images,
            min_scale=self.config.min_scale,
            hflip=self.config.hflip,
        )

        if self.context.is_main:
            data = prepare_data(settings)
        distributed.barrier(self.context)
        if not self.context.is_main:
            data = prepare_data(settings)

        if self.saved_run is not None:
            _check_same_classes(self.run_dir, self.saved_run["class_keys"], list(data.class_keys))
        return data

    def _build_loaders(self, data: Any) -> tuple[Any, Any]:
        from dogbreeds.data import BatchLoader

        common = {
            "image_size": self.config.resolved_image_size(),
            "seed": self.config.seed,
            "rank": self.context.rank,
            "world_size": self.context.world_size,
            "workers": self.config.workers,
        }
        train_loader = BatchLoader(
            data.train, self.config.batch_size, train=True, min_scale=self.config.min_scale,
            hflip=self.config.hflip, **common,
        )
        val_loader = BatchLoader(data.val, self.config.batch_size, train=False, **common)

        if len(train_loader) == 0:
            raise ValueError(
                f"The training split of {self.config.train_dir} has no batches ({len(data.train)} images). "
                f"Add images or lower --val-fraction."
            )
        return train_loader, val_loader

    def _build_model(self, class_keys: list[str], class_names: list[str]) -> nn.Module:
        """Create the model on the CPU, load resumed weights, describe it for config.json, move it to the device."""
        image_size = self.config.resolved_image_size()
        torch.manual_seed(self.config.seed)
        # A resumed run overwrites every weight from last.safetensors, so it skips loading pretrained weights.
        pretrained = self.config.pretrained and self.saved_run is None
        model = create_model(self.config.arch, len(class_keys), image_size=image_size, pretrained=pretrained)

        if self.saved_run is not None:
            model.load_state_dict(read_weights(self.run_dir / LAST_FILE))
            # The fixed fields (classes, size, cost, creation time) stay as the run's first epoch wrote them.
            self.run_info = {key: value for key, value in self.saved_run.items()
                             if key not in ("train_config", "metrics")}
        else:
            self.run_info = build_run_config(model, class_keys=class_keys, class_names=class_names,
                                             flops=flops_per_image(model, image_size))
            self.run_info.pop("train_config")
            self.run_info.pop("metrics")

        self.channels_last = wants_channels_last(model)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return model.to(self.device, memory_format=memory_format)

    # --- the run ------------------------------------------------------------------------------------------

    def run(self) -> FitResult:
        """Prepare data and model, train the remaining epochs, and return the result."""
        config = self.config
        data = self._prepare_data()
        train_loader, val_loader = self._build_loaders(data)
        model = self._build_model(list(data.class_keys), list(data.class_names))
        self.plain_model = model
        self.run_info["data"] = {"description": data.description, "train_images": len(data.train),
                                 "val_images": len(data.val)}

        if self.context.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

        optimizer = build_optimizer(self.plain_model, config)
        steps_per_epoch = len(train_loader)
        warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), config.epochs * steps_per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, cosine_with_warmup(warmup_steps, config.epochs * steps_per_epoch)
        )
        if self.saved_run is not None:
            self.progress = _restore_progress(self.run_dir, optimizer, scheduler, self.saved_history)

        train_criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

        first_epoch = self.progress.epochs_completed + 1
        logger.info(
            "Training %s on %s for epochs %d-%d: %d training and %d validation images, %d batches of %d per "
            "epoch on %s (%d process%s), lr %.3g with %s; run folder %s",
            config.arch, config.train_dir, first_epoch, config.epochs, len(data.train), len(data.val),
            steps_per_epoch, config.batch_size, self.device, self.context.world_size,
            "es" if self.context.world_size > 1 else "", config.lr, config.optimizer, self.run_dir,
        )
        self._emit(TrainEvent("start", first_epoch, config.epochs, num_batches=steps_per_epoch,
                              message=data.description, run_dir=self.run_dir))

        stopped = False
        early_stopped = False
        for epoch in range(first_epoch, config.epochs + 1):
            try:
                entry = self._run_epoch(epoch, model, train_loader, val_loader, optimizer, scheduler,
                                        train_criterion)
            except _StopRequested:
                stopped = True
                logger.info("Stopped during epoch %d; the run folder keeps epoch %d", epoch,
                            self.progress.epochs_completed)
                break

            self._record_epoch(entry, optimizer, scheduler)
            if config.patience is not None and self.progress.epochs_since_best >= config.patience:
                early_stopped = epoch < config.epochs
                if early_stopped:
                    logger.info("Early stopping: validation top-1 has not improved for %d epochs (best %.2f%% at "
                                "epoch %d)", config.patience, 100 * self.progress.best_top1,
                                self.progress.best_epoch)
                break

        distributed.barrier(self.context)
        return self._finish(stopped, early_stopped)

    def _run_epoch(self, epoch: int, model: nn.Module, train_loader: Any, val_loader: Any,
                   optimizer: torch.optim.Optimizer, scheduler: Any, criterion: nn.Module) -> dict[str, Any]:
        """Train and validate one epoch and return its history entry; raise _StopRequested on a stop."""
        # Reseeding per epoch makes dropout draws independent of where a resumed run restarted.
        torch.manual_seed(self.config.seed * 100_003 + epoch * 101 + self.context.rank)
        train_loader.set_epoch(epoch)
        num_batches = len(train_loader)
        totals = ClassificationTotals(self.device)
        lr_used = optimizer.param_groups[0]["lr"]

        model.train()
        started = time.perf_counter()
        for batch_index, (images, labels) in enumerate(train_loader, start=1):
            images, labels = self._to_device(images, labels)

            with _autocast(self.device):
                logits = model(images)
                loss = criterion(logits.float(), labels)

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr_used = optimizer.param_groups[0]["lr"]
            scheduler.step()
            totals.update(logits.float(), labels, loss.detach() * labels.shape[0])

            if batch_index % BATCH_EVENT_INTERVAL == 0 or batch_index == num_batches:
                running = totals.summary()
                self._emit(TrainEvent("batch", epoch, self.config.epochs, batch=batch_index,
                                      num_batches=num_batches, loss=running["loss"], run_dir=self.run_dir))
            self._check_stop()

        distributed.all_reduce_sum(self.context, totals.values)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        train_seconds = time.perf_counter() - started
        train = totals.summary()

        val = self._validate(model, val_loader)
        seconds = time.perf_counter() - started

        return {
            "epoch": epoch,
            "train_loss": train["loss"],
            "train_acc": train["top1"],
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "images_per_s": train["count"] / train_seconds if train_seconds > 0 else 0.0,
            "seconds": seconds,
            "lr": lr_used,
            "train_images": train["count"],
            "val_images": val["count"],
        }

    @torch.inference_mode()
    def _validate(self, model: nn.Module, val_loader: Any) -> dict[str, float]:
        """Return plain cross-entropy (no label smoothing) and top-1/top-5 over the whole validation split."""
        model.eval()
        totals = ClassificationTotals(self.device)
        for images, labels in val_loader:
            images, labels = self._to_device(images, labels)
            with _autocast(self.device):
                logits = model(images).float()
            totals.update(logits, labels, nn.functional.cross_entropy(logits, labels, reduction="sum"))
            self._check_stop()

        distributed.all_reduce_sum(self.context, totals.values)
        return totals.summary()

    def _to_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        images = images.to(self.device, non_blocking=non_blocking, memory_format=memory_format)
        return images, labels.to(self.device, non_blocking=non_blocking)

    def _check_stop(self) -> None:
        requested = bool(self.should_stop()) if self.should_stop is not None else False
        if distributed.any_process(self.context, requested, self.device):
            raise _StopRequested

    def _emit(self, event: TrainEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    # --- saving -------------------------------------------------------------------------------------------

    def _record_epoch(self, entry: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        """Update the counters, write the run folder (rank 0), send the epoch event and log the epoch line."""
        progress = self.progress
        improved = entry["val_top1"] > progress.best_top1
        if improved:
            progress.best_top1 = entry["val_top1"]
            progress.best_epoch = entry["epoch"]
            progress.epochs_since_best = 0
        else:
            progress.epochs_since_best += 1

        progress.epochs_completed = entry["epoch"]
        progress.train_seconds += entry["seconds"]
        progress.history.append(entry)

        line = format_epoch_line(entry["epoch"], self.config.epochs, entry)
        if self.context.is_main:
            self._save(improved, optimizer, scheduler)
            self._emit(TrainEvent("epoch", entry["epoch"], self.config.epochs, metrics=dict(entry),
                                  message=line, run_dir=self.run_dir))
            logger.info("%s", line)

    def _save(self, improved: bool, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        """Write weights, history, optimizer state and config.json; each file is replaced atomically.

        trainer_state.json is written after the weights and history, so a process killed between the writes
        resumes from the previous epoch's counters.
        """
        # NOTE: the files are replaced one by one, so a kill between two writes can leave last.safetensors one
        # epoch ahead of trainer_state.json. A resume then repeats that epoch, starting from the newer weights.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_weights(self.run_dir / LAST_FILE, self.plain_model)
        if improved:
            save_weights(self.run_dir / MODEL_FILE, self.plain_model)
        write_history(self.run_dir, self.progress.history)
        save_training_state(self.run_dir, optimizer, scheduler, self.progress.state())
        write_run_config(self.run_dir, self._run_config())

    def _run_config(self, stopped: bool = False, early_stopped: bool = False,
                    finished: bool = False) -> dict[str, Any]:
        """Return config.json: the fixed run fields plus the training settings and the metrics so far.

        `finished` is True once the run ended by itself (all epochs, or early stopping); a run that was stopped
        or killed mid-way keeps False.
        """
        progress = self.progress
        train_config = self.config.to_dict()
        train_config["resume"] = None
        return {
            **self.run_info,
            "train_config": train_config,
            "metrics": {
                "best_epoch": progress.best_epoch,
                "best_top1": progress.best_top1 if progress.best_epoch else None,
                "best_top5": self._best_entry().get("val_top5"),
                "last_epoch": progress.epochs_completed,
                "epochs_completed": progress.epochs_completed,
                "train_seconds": progress.train_seconds,
                "stopped": stopped,
                "early_stopped": early_stopped,
                "finished": finished,
            },
            "world_size": self.context.world_size,
        }

    def _best_entry(self) -> dict[str, Any]:
        for entry in self.progress.history:
            if entry["epoch"] == self.progress.best_epoch:
                return dict(entry)
        return {}

    def _finish(self, stopped: bool, early_stopped: bool) -> FitResult:
        """Record how the run ended in config.json, send the end event and build the result."""
        if self.context.is_main and self.progress.epochs_completed > 0:
            write_run_config(self.run_dir, self._run_config(stopped, early_stopped, finished=not stopped))

        best = self._best_entry()
        if stopped:
            message = "stopped"
        elif early_stopped:
            message = "early stopped"
        else:
            message = "finished"

        self._emit(TrainEvent("end", self.progress.epochs_completed, self.config.epochs, metrics=best or None,
                              message=message, run_dir=self.run_dir))
        if best:
            logger.info("Run %s %s: best validation top-1 %.2f%% at epoch %d", self.run_dir, message,
                        100 * best["val_top1"], best["epoch"])
        return FitResult(self.run_dir, list(self.progress.history), best, stopped, early_stopped)


def _load_resume_state(run_dir: Path) -> tuple[TrainConfig, dict[str, Any], list[dict]]:
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


def _restore_progress(run_dir: Path, optimizer: torch.optim.Optimizer, scheduler: Any,
                      history: list[dict]) -> _Progress:
    """Load the optimizer and scheduler state and the counters saved after the last completed epoch."""
    state = load_training_state(run_dir, optimizer, scheduler)
    completed = int(state["epoch"])
    return _Progress(
        epochs_completed=completed,
        best_epoch=int(state["best_epoch"]),
        best_top1=float(state["best_top1"]),
        epochs_since_best=int(state["epochs_since_best"]),
        train_seconds=float(state["train_seconds"]),
        history=[entry for entry in history if entry["epoch"] <= completed],
    )


def _check_same_classes(run_dir: Path, saved_keys: list[str], found_keys: list[str]) -> None:
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
