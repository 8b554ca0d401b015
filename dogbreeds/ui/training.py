"""Training sessions of the app: fit() in a worker thread, one run at a time per server, stop per browser session.

The Gradio handler that starts a run stays a generator on the server's worker pool: it polls the job's event
queue and yields page updates, while fit() runs in its own thread. Stop sets the job's threading.Event, which
fit() checks after every batch, so a run ends within one batch and keeps its last completed epoch.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# The live plot keeps at most this many smoothed batch-loss points; older points are thinned by half when full.
MAX_BATCH_POINTS = 1500

# Weight of the newest interval in the exponential moving average of the batch loss.
BATCH_LOSS_SMOOTHING = 0.3


class TrainingJob:
    """One fit() call in a worker thread, the events it sent, and how it ended."""

    def __init__(self, session: str, config: Any, after_fit: Callable[["TrainingJob"], None] | None = None) -> None:
        self.session = session
        self.config = config
        self.stop_event = threading.Event()
        self.finished = threading.Event()
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.result: Any = None               # FitResult once fit() returned
        self.error: BaseException | None = None
        self.after_fit = after_fit            # runs in the worker thread after fit(), for example evaluation
        self.after_fit_error: BaseException | None = None
        self.extra: dict[str, Any] = {}       # results of after_fit
        self._thread: threading.Thread | None = None
        self._on_finish: Callable[[TrainingJob], None] | None = None

    @property
    def started(self) -> bool:
        """Tell whether the worker thread was started."""
        return self._thread is not None

    def start(self, on_finish: Callable[["TrainingJob"], None]) -> None:
        """Start fit() in a daemon thread; `on_finish(job)` runs in that thread when everything is done."""
        self._on_finish = on_finish
        self._thread = threading.Thread(target=self._run, name=f"dogbreeds-train-{self.session[:8]}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask fit() to end after the current batch (or the job never to start)."""
        self.stop_event.set()

    def drain(self, timeout: float) -> list[Any]:
        """Wait up to `timeout` seconds for the first event, then return it with every event already queued."""
        events: list[Any] = []
        try:
            events.append(self.events.get(timeout=timeout))
        except queue.Empty:
            return events
        while True:
            try:
                events.append(self.events.get_nowait())
            except queue.Empty:
                return events

    def _run(self) -> None:
        from dogbreeds.trainer import fit

        try:
            self.result = fit(self.config, on_event=self.events.put, should_stop=self.stop_event.is_set)
        except Exception as error:  # noqa: BLE001 - shown to the user by the handler, logged here
            logger.exception("Training for session %s failed", self.session[:8])
            self.error = error

        if self.error is None and self.after_fit is not None:
            try:
                self.after_fit(self)
            except Exception as error:  # noqa: BLE001 - the run itself is saved; only the extra step failed
                logger.exception("Post-training step for %s failed", self.session[:8])
                self.after_fit_error = error

        try:
            if self._on_finish is not None:
                self._on_finish(self)
        finally:
            self.finished.set()


class TrainingCoordinator:
    """Server-wide bookkeeping: at most one job runs, each browser session has at most one job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: TrainingJob | None = None
        self._by_session: dict[str, TrainingJob] = {}

    def register(self, job: TrainingJob) -> bool:
        """Record `job` for its session; return False when that session already has an unfinished job."""
        with self._lock:
            current = self._by_session.get(job.session)
            if current is not None and not current.finished.is_set():
                return False
            self._by_session[job.session] = job
            return True

    def try_activate(self, job: TrainingJob) -> bool:
        """Make `job` the running one when no other job runs; return whether it may start now."""
        with self._lock:
            if self._running is None or self._running is job:
                self._running = job
                return True
            return False

    def release(self, job: TrainingJob) -> None:
        """Forget `job`: it finished, failed, or left the queue before it started."""
        with self._lock:
            if self._running is job:
                self._running = None
            if self._by_session.get(job.session) is job:
                del self._by_session[job.session]

    def request_stop(self, session: str) -> TrainingJob | None:
        """Set the stop flag of the session's job and return that job, or return None when it has none."""
        with self._lock:
            job = self._by_session.get(session)
        if job is None or job.finished.is_set():
            return None
        job.request_stop()
        return job

    @property
    def running(self) -> TrainingJob | None:
        """The job whose fit() currently runs, if any."""
        with self._lock:
            return self._running


@dataclass
class LiveCurves:
    """Per-epoch metrics and a smoothed batch loss, turned into the long-format tables gr.LinePlot draws.

    x is in epochs: epoch e's metrics sit at x = e, and a batch b of n in epoch e at x = e - 1 + b / n.
    """

    epochs: list[dict[str, float]] = field(default_factory=list)
    batch_points: list[tuple[float, float]] = field(default_factory=list)
    _smoothed: float | None = None
    _last_batch: int = 0
    _last_mean: float = 0.0
    version: int = 0                      # increases with every change, so callers can skip redrawing

    def add_batch(self, epoch: int, batch: int, num_batches: int, running_mean: float | None) -> None:
        """Add a batch report; `running_mean` is fit()'s mean training loss of the epoch so far."""
        if running_mean is None or not math.isfinite(running_mean) or num_batches <= 0:
            return
        if batch <= self._last_batch:
            # A new epoch restarts the running mean.
            self._last_batch, self._last_mean = 0, 0.0

        # The mean over the batches since the previous report, recovered from two running means of the epoch.
        count = batch - self._last_batch
        interval = (running_mean * batch - self._last_mean * self._last_batch) / count
        self._last_batch, self._last_mean = batch, running_mean
        if not math.isfinite(interval):
            return

        if self._smoothed is None:
            self._smoothed = interval
        else:
            self._smoothed += BATCH_LOSS_SMOOTHING * (interval - self._smoothed)
        self.batch_points.append((epoch - 1 + batch / num_batches, self._smoothed))
        if len(self.batch_points) > MAX_BATCH_POINTS:
            self.batch_points = self.batch_points[::2]
        self.version += 1

    def add_epoch(self, metrics: dict[str, Any]) -> None:
        """Add an epoch's history entry (epoch, train_loss, train_acc, val_loss, val_top1, val_top5)."""
        self.epochs.append({key: float(metrics[key]) for key in _EPOCH_KEYS if key in metrics})
        self.version += 1

    def loss_frame(self, names: dict[str, str]) -> Any:
        """Return a DataFrame (epoch, value, series) of train loss, validation loss and smoothed batch loss.

        `names` maps "train_loss", "val_loss" and "batch_loss" to the series names shown in the legend.
        """
        rows = [(float(entry["epoch"]), entry.get("train_loss", math.nan), names["train_loss"]) for entry in self.epochs]
        rows += [(float(entry["epoch"]), entry.get("val_loss", math.nan), names["val_loss"]) for entry in self.epochs]
        rows += [(x, loss, names["batch_loss"]) for x, loss in self.batch_points]
        return _frame(rows, [names["train_loss"], names["val_loss"], names["batch_loss"]])

    def accuracy_frame(self, names: dict[str, str]) -> Any:
        """Return a DataFrame (epoch, value, series) of train accuracy and validation top-1/top-5, in percent.

        `names` maps "train_acc", "val_top1" and "val_top5" to the series names shown in the legend.
        """
        rows = []
        for key in ("train_acc", "val_top1", "val_top5"):
            rows += [(float(entry["epoch"]), 100.0 * entry.get(key, math.nan), names[key]) for entry in self.epochs]
        return _frame(rows, [names["train_acc"], names["val_top1"], names["val_top5"]])


_EPOCH_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5")


def _frame(rows: list[tuple[float, float, str]], series: list[str]) -> Any:
    """Build the plot table with one empty (NaN) row per series at x = 0.

    gr.LinePlot (Gradio 6.31) fixes its colour legend from the first table it receives, so every series must appear
    in the very first frame. A NaN value registers the series without drawing a point.
    """
    import pandas as pd

    seed = [(0.0, math.nan, name) for name in series]
    return pd.DataFrame(seed + rows, columns=["epoch", "value", "series"])


def run_folder_exists(result: Any) -> bool:
    """Tell whether a FitResult left a run folder (it does not when the run stopped before its first epoch)."""
    run_dir = getattr(result, "run_dir", None)
    return isinstance(run_dir, Path) and (run_dir / "config.json").is_file()
