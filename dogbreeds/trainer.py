"""fit(): train one model on one image folder and write the run folder, with progress events and a stop check.

The CLI (`python -m dogbreeds.train`), torchrun, the Gradio app and the tests all train through fit().
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dogbreeds import distributed
from dogbreeds.checkpoint import (
    LAST_FILE,
    MODEL_FILE,
    build_run_config,
    read_weights,
    save_training_state,
    save_weights,
    write_history,
    write_run_config,
)
from dogbreeds.config import TrainConfig
from dogbreeds.distributed import DistContext
from dogbreeds.metrics import ClassificationTotals, format_epoch_line
from dogbreeds.models import create_model, flops_per_image, wants_channels_last
from dogbreeds.optimization import build_optimizer, cosine_with_warmup, warmup_step_count
from dogbreeds.resume import (
    TrainingProgress,
    check_epochs_left,
    check_same_classes,
    load_resume_state,
    merge_resume_config,
    restore_progress,
)
from dogbreeds.runtime import autocast, describe_precision, resolve_device, resolve_precision

logger = logging.getLogger(__name__)

# A batch event goes out every this many batches, plus one for the last batch of each epoch.
BATCH_EVENT_INTERVAL = 5

# Below this many validation images, fit() warns that top-1 differences between epochs are mostly noise.
SMALL_VALIDATION_IMAGES = 100

# A model that guesses uniformly has a loss of ln(num_classes). After the first epoch, a training loss above
# this many times that, or a validation loss above UNSTABLE_VAL_LOSS times it, means training is unstable.
UNSTABLE_TRAIN_LOSS = 3.0
UNSTABLE_VAL_LOSS = 10.0


@dataclass
class TrainEvent:
    """One progress report from fit(). Epochs and batches count from 1."""

    kind: str                      # "prepare" | "start" | "batch" | "epoch" | "end"
    epoch: int
    num_epochs: int
    batch: int = 0                 # prepare events: images decoded so far
    num_batches: int = 0           # prepare events: images to decode
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


class TrainingDivergedError(RuntimeError):
    """Raised when the loss became NaN or infinite; the run folder keeps the last completed epoch."""


class _StopRequested(Exception):
    """Raised inside an epoch when should_stop() returned True, to leave the batch loop at once."""


def fit(
    config: TrainConfig,
    on_event: Callable[[TrainEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FitResult:
    """Train `config.arch` on `config.train_dir` and write the run folder after every completed epoch.

    on_event receives "prepare" events while images are decoded into the cache (epoch 0), a "start" event, a
    "batch" event every few batches, an "epoch" event per completed epoch and one "end" event. should_stop is
    called after every batch and while the cache is built. Once it returns True, the run ends within one batch
    and keeps the files of the last completed epoch (FitResult.stopped is True).

    With config.resume set, training continues the run in that folder after its last completed epoch. The
    architecture, split and optimizer settings come from the run folder, while epochs, patience, device and
    data locations come from `config`. Under torchrun (WORLD_SIZE > 1) every process calls fit(), and rank 0
    alone writes files and sends events.

    Raises ValueError for invalid settings, a missing device or a resumed run with no epochs left,
    FileNotFoundError for a missing resume folder, the data layer's errors for unusable image folders, and
    TrainingDivergedError when the loss stops being finite.
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
        self.progress = TrainingProgress()
        self.saved_run: dict[str, Any] | None = None
        self.saved_history: list[dict] = []
        self.run_info: dict[str, Any] = {}   # the config.json fields fixed for the whole run, set by _build_model
        self.config, self.run_dir = self._resolve_config(config)
        self.autocast_dtype = resolve_precision(self.config.precision, device)

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
        saved_config, self.saved_run, self.saved_history = load_resume_state(run_dir)
        check_epochs_left(run_dir, requested.epochs)
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
            # A stop during preparation only works for one process: the others would wait at the barrier.
            progress = self._preparation_progress if not self.context.enabled else None
            data = prepare_data(settings, progress=progress)
        distributed.barrier(self.context)
        if not self.context.is_main:
            data = prepare_data(settings)

        if self.saved_run is not None:
            check_same_classes(self.run_dir, self.saved_run["class_keys"], list(data.class_keys))
        return data

    def _preparation_progress(self, done: int, total: int) -> None:
        """Forward the data layer's decode progress as "prepare" events and honour should_stop meanwhile."""
        self._emit(TrainEvent("prepare", 0, self.config.epochs, batch=done, num_batches=total,
                              message="decoding and caching images", run_dir=self.run_dir))
        if self.should_stop is not None and self.should_stop():
            raise _StopRequested

    def _build_loaders(self, data: Any) -> tuple[Any, Any]:
        from dogbreeds.data import BatchLoader, prefetch_in_thread

        common = {
            "image_size": self.config.resolved_image_size(),
            "seed": self.config.seed,
            "rank": self.context.rank,
            "world_size": self.context.world_size,
            "workers": self.config.workers,
            "prefetch": prefetch_in_thread(self.device, self.context.local_world_size),
        }
        train_loader = BatchLoader(
            data.train, self.config.batch_size, train=True, min_scale=self.config.min_scale,
            hflip=self.config.hflip, **common,
        )
        val_loader = BatchLoader(data.val, self.config.batch_size, train=False, **common)

        if len(train_loader) == 0:
            raise ValueError(
                f"The training split of {self.config.train_dir} has no batches ({len(data.train)} images). "
                f"Add images or lower the validation fraction."
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
        try:
            data = self._prepare_data()
        except _StopRequested:
            logger.info("Stopped while preparing the data; nothing was trained")
            return self._finish(stopped=True, early_stopped=False)

        train_loader, val_loader = self._build_loaders(data)
        model, optimizer, scheduler = self._build_training(data, len(train_loader))
        self._announce(data, len(train_loader))

        stopped, early_stopped = self._train_epochs(model, train_loader, val_loader, optimizer, scheduler)
        distributed.barrier(self.context)
        return self._finish(stopped, early_stopped)

    def _build_training(self, data: Any, steps_per_epoch: int) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
        """Build the model (DDP-wrapped under torchrun), the optimizer and the per-step LR schedule."""
        config = self.config
        model = self._build_model(list(data.class_keys), list(data.class_names))
        self.plain_model = model
        self.run_info["data"] = {"description": data.description, "train_images": len(data.train),
                                 "val_images": len(data.val)}

        if self.context.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

        optimizer = build_optimizer(self.plain_model, config)
        total_steps = config.epochs * steps_per_epoch
        warmup_steps = warmup_step_count(config.warmup_epochs, steps_per_epoch, total_steps)
        # NOTE: resuming with more epochs than the run started with stretches the cosine from the current step
        # on, so the learning rate jumps up once instead of following the original curve.
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(warmup_steps, total_steps))

        if self.saved_run is not None:
            self.progress = restore_progress(self.run_dir, optimizer, scheduler, self.saved_history)
        return model, optimizer, scheduler

    def _announce(self, data: Any, steps_per_epoch: int) -> None:
        """Log the run's plan, warn about a validation split too small to compare epochs, send the start event."""
        config = self.config
        first_epoch = self.progress.epochs_completed + 1
        processes = f"{self.context.world_size} process" + ("es" if self.context.world_size > 1 else "")
        logger.info(
            "Training %s on %s for epochs %d-%d: %d training and %d validation images, %d batches of %d per "
            "epoch on %s (%s, %s), lr %.3g with %s; run folder %s",
            config.arch, config.train_dir, first_epoch, config.epochs, len(data.train), len(data.val),
            steps_per_epoch, config.batch_size, self.device, processes, describe_precision(self.autocast_dtype),
            config.lr, config.optimizer, self.run_dir,
        )
        if 0 < len(data.val) < SMALL_VALIDATION_IMAGES:
            logger.warning(
                "Only %d validation images: top-1 moves in steps of %.1f percentage points, so small differences "
                "between epochs or models are noise. Use more images or a larger validation fraction.",
                len(data.val), 100 / len(data.val),
            )
        self._emit(TrainEvent("start", first_epoch, config.epochs, num_batches=steps_per_epoch,
                              message=data.description, run_dir=self.run_dir))

    def _train_epochs(self, model: nn.Module, train_loader: Any, val_loader: Any,
                      optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[bool, bool]:
        """Run the remaining epochs; return (stopped by should_stop, stopped early by patience)."""
        config = self.config
        criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

        for epoch in range(self.progress.epochs_completed + 1, config.epochs + 1):
            try:
                entry = self._run_epoch(epoch, model, train_loader, val_loader, optimizer, scheduler, criterion)
            except _StopRequested:
                logger.info("Stopped during epoch %d; the run folder keeps epoch %d", epoch,
                            self.progress.epochs_completed)
                return True, False

            self._record_epoch(entry, optimizer, scheduler)

            if config.patience is not None and self.progress.epochs_since_best >= config.patience:
                if epoch == config.epochs:
                    return False, False
                logger.info("Early stopping: validation top-1 has not improved for %d epochs (best %.2f%% at "
                            "epoch %d)", config.patience, 100 * self.progress.best_top1, self.progress.best_epoch)
                return False, True

        return False, False

    def _run_epoch(self, epoch: int, model: nn.Module, train_loader: Any, val_loader: Any,
                   optimizer: torch.optim.Optimizer, scheduler: Any, criterion: nn.Module) -> dict[str, Any]:
        """Train and validate one epoch and return its history entry; raise _StopRequested on a stop."""
        started = time.perf_counter()
        train, lr_used = self._train_batches(epoch, model, train_loader, optimizer, scheduler, criterion)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        train_seconds = time.perf_counter() - started

        val = self._validate(model, val_loader)
        self._check_finite(val["loss"], epoch, "validation", lr_used)
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

    def _train_batches(self, epoch: int, model: nn.Module, train_loader: Any, optimizer: torch.optim.Optimizer,
                       scheduler: Any, criterion: nn.Module) -> tuple[dict[str, float], float]:
        """Run one epoch's optimizer steps; return the training totals (all processes) and the last step's LR."""
        # Reseeding per epoch makes dropout draws independent of where a resumed run restarted.
        torch.manual_seed(self.config.seed * 100_003 + epoch * 101 + self.context.rank)
        train_loader.set_epoch(epoch)
        num_batches = len(train_loader)
        totals = ClassificationTotals(self.device)
        lr_used = optimizer.param_groups[0]["lr"]
        model.train()

        for batch_index, (images, labels) in enumerate(train_loader, start=1):
            images, labels = self._to_device(images, labels)

            # The forward pass may run in bf16 (see runtime.resolve_precision). The loss is computed in float32.
            with autocast(self.device, self.autocast_dtype):
                logits = model(images)
            loss = criterion(logits.float(), labels)

            # backward, step, and the per-step schedule
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr_used = optimizer.param_groups[0]["lr"]
            scheduler.step()

            # record, report, and stop within one batch when asked
            totals.update(logits.float(), labels, loss.detach() * labels.shape[0])
            if batch_index % BATCH_EVENT_INTERVAL == 0 or batch_index == num_batches:
                # Reading the running loss syncs with the GPU, so it is checked only at the batch events.
                running_loss = totals.summary()["loss"]
                self._check_finite(running_loss, epoch, f"batch {batch_index} of {num_batches}", lr_used)
                self._emit(TrainEvent("batch", epoch, self.config.epochs, batch=batch_index,
                                      num_batches=num_batches, loss=running_loss, run_dir=self.run_dir))
            self._check_stop()

        distributed.all_reduce_sum(self.context, totals.values)
        return totals.summary(), lr_used

    @torch.inference_mode()
    def _validate(self, model: nn.Module, val_loader: Any) -> dict[str, float]:
        """Return plain cross-entropy (no label smoothing) and top-1/top-5 over the whole validation split."""
        model.eval()
        totals = ClassificationTotals(self.device)
        for images, labels in val_loader:
            images, labels = self._to_device(images, labels)
            with autocast(self.device, self.autocast_dtype):
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

    def _check_finite(self, loss: float, epoch: int, where: str, lr: float) -> None:
        """Raise TrainingDivergedError on every process when the loss is NaN or infinite on any of them."""
        if not distributed.any_process(self.context, not math.isfinite(loss), self.device):
            return

        kept = (f"the run folder {self.run_dir} keeps epoch {self.progress.epochs_completed}"
                if self.progress.epochs_completed else "nothing was saved")
        raise TrainingDivergedError(
            f"Training diverged: the loss became {loss} in epoch {epoch} ({where}) at learning rate {lr:.3g}, "
            f"so training stopped and {kept}. Start again with a lower learning rate (for example --lr "
            f"{self.config.lr / 10:.3g}), or use --optimizer adamw."
        )

    def _warn_if_unstable(self, entry: dict[str, Any]) -> None:
        """Log a warning when an epoch's loss is far above that of uniform guessing."""
        uniform_loss = math.log(max(2, len(self.run_info.get("class_keys", []))))
        train_unstable = entry["epoch"] > 1 and entry["train_loss"] > UNSTABLE_TRAIN_LOSS * uniform_loss
        val_unstable = entry["val_loss"] > UNSTABLE_VAL_LOSS * uniform_loss
        if train_unstable or val_unstable:
            logger.warning(
                "Training looks unstable: epoch %d has training loss %.4g and validation loss %.4g, while "
                "guessing uniformly gives %.3g. Lower the learning rate (for example --lr %.3g) or use "
                "--optimizer adamw.",
                entry["epoch"], entry["train_loss"], entry["val_loss"], uniform_loss, self.config.lr / 10,
            )

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
            self._warn_if_unstable(entry)

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
        if self.context.is_main and self.progress.epochs_completed > 0 and self.run_info:
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


