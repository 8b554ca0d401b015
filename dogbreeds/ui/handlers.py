"""Handler functions of the app, one method per user action, free of any layout.

`AppHandlers` contains what the handlers share (settings, the training coordinator, the run registry, the Predictor
cache) so tests can build one with their own folders and call every handler directly. Handlers take an optional
gr.Request to reply in the browser's language (its Accept-Language header) and to distinguish sessions.
"""

from __future__ import annotations

import html
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import gradio as gr

from dogbreeds.ui.photos import PhotoRejected, decode_photo, read_photo_bytes
from dogbreeds.ui.runs import KnownRun, PredictorCache, RunRegistry
from dogbreeds.ui.settings import AppSettings, DataFolderRejected, resolve_data_folder
from dogbreeds.ui.text import language_of, message
from dogbreeds.ui.training import LiveCurves, TrainingCoordinator, TrainingJob, run_folder_exists

logger = logging.getLogger(__name__)

# Text and the progress bar update at most every TEXT_INTERVAL_S, the plots at most every PLOT_INTERVAL_S. The
# browser needs about a tenth of a second to redraw a plot, so it falls behind when every batch sends one.
TEXT_INTERVAL_S = 0.25
PLOT_INTERVAL_S = 1.0
WAIT_POLL_S = 0.5
LOG_LINES = 200
CONFUSED_PAIRS = 10

# Order of the values the train handler yields; app.py wires its outputs in the same order.
TRAIN_OUTPUTS: tuple[str, ...] = (
    "status", "progress", "loss_plot", "accuracy_plot", "log", "summary", "confusion", "confused_pairs",
    "run_folder", "download_row",
)

# Line colours of the plots (matplotlib's tab10 palette), fixed so a series keeps its colour between updates.
PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)


class SettingRejected(ValueError):
    """A training setting the handler will not start with; `text` is already in the user's language."""

    def __init__(self, text: str, *, show_download: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.show_download = show_download


def session_of(request: Any) -> str:
    """Return the browser session id of a gr.Request; calls without one share the id "direct"."""
    return str(getattr(request, "session_hash", None) or "direct")


def series_names(language: str) -> dict[str, str]:
    """Return the legend names of the training plots in `language`."""
    keys = ("train_loss", "val_loss", "batch_loss", "train_acc", "val_top1", "val_top5")
    return {key: message(f"series_{key}", language) for key in keys}


def format_percent(value: Any) -> str:
    """Format a fraction in [0, 1] as a percentage with one decimal, or "n/a"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{100.0 * value:.1f} %"


def format_count(value: Any) -> str:
    """Format an integer with thousands separators, or "n/a"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "n/a"
    return f"{int(value):,}"


def format_duration(seconds: Any, language: str) -> str:
    """Format seconds as "1 h 02 min 03 s" / "12 min 03 s" in `language`."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "n/a"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return message("duration_hours", language, hours=hours, minutes=minutes, seconds=secs)
    return message("duration_minutes", language, minutes=minutes, seconds=secs)


@dataclass
class TrainView:
    """Train tab contents for one run; `frame()` turns them into the tuple the train handler yields."""

    language: str
    status: str = ""
    progress: float = 0.0                 # fraction of the run's batches done, in [0, 1]
    started_at: float | None = None       # time.monotonic() when fit() started
    log: list[str] = field(default_factory=list)
    curves: LiveCurves = field(default_factory=LiveCurves)
    summary: str = ""
    confusion: str | None = None
    confused_pairs: Any = None
    run_folder: str = ""
    show_download: bool = False
    plotted_version: int = -1

    def add_log(self, line: str) -> None:
        """Append a line to the log box, keeping the last LOG_LINES lines."""
        self.log.append(line)
        del self.log[:-LOG_LINES]

    def progress_html(self) -> str:
        """Return the progress bar as HTML: a <progress> element, the percentage and the time since the start."""
        if self.started_at is None:
            return ""
        value = min(max(self.progress, 0.0), 1.0)
        elapsed = format_duration(time.monotonic() - self.started_at, self.language)
        caption = html.escape(f"{100 * value:.0f} % · {elapsed}")
        return (
            f'<div class="dogbreeds-progress"><progress max="1" value="{value:.4f}"></progress>'
            f"<span>{caption}</span></div>"
        )

    def frame(self, *, plots: bool) -> tuple[Any, ...]:
        """Return the values for TRAIN_OUTPUTS; the plots are sent only when `plots` is true and they changed."""
        if plots and self.curves.version != self.plotted_version:
            names = series_names(self.language)
            loss_plot: Any = self.curves.loss_frame(names)
            accuracy_plot: Any = self.curves.accuracy_frame(names)
            self.plotted_version = self.curves.version
        else:
            loss_plot = accuracy_plot = gr.skip()

        return (
            self.status,
            self.progress_html(),
            loss_plot,
            accuracy_plot,
            "\n".join(self.log),
            self.summary,
            # Both stay hidden until an evaluation filled them, so no empty placeholders show during training.
            gr.update(value=self.confusion, visible=self.confusion is not None),
            gr.update(value=self.confused_pairs, visible=self.confused_pairs is not None),
            self.run_folder,
            gr.update(visible=self.show_download),
        )


class AppHandlers:
    """Every handler of the app, sharing settings, the training coordinator, the run registry and the caches.

    `hub_options` are passed to hub.download_run (for example `cache_dir` and `endpoint` in tests).
    """

    def __init__(
        self,
        settings: AppSettings,
        *,
        coordinator: TrainingCoordinator | None = None,
        hub_options: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.coordinator = coordinator or TrainingCoordinator()
        self.registry = RunRegistry(settings.checkpoints_dir)
        self.predictors = PredictorCache()
        self.hub_options = dict(hub_options or {})
        self._download_lock = threading.Lock()

    # ----------------------------------------------------------------------------------------------------------
    # Data folder and download

    def check_data_folder(self, data_dir: str | None, request: gr.Request = None) -> tuple[str, Any]:
        """Describe the data folder (ready, missing, invalid); show the download row when it is missing."""
        language = language_of(request)
        try:
            path = self._existing_data_folder(data_dir, language)
        except SettingRejected as rejected:
            return rejected.text, gr.update(visible=rejected.show_download)

        from dogbreeds.folders import scan_image_folder

        try:
            index = scan_image_folder(path)
        except (ValueError, OSError) as error:
            # The download can go into an existing folder too, and resumes an interrupted one there.
            return message("data_folder_invalid", language, path=path, detail=error), gr.update(visible=True)
        text = message(
            "data_folder_ready", language, path=index.root, classes=len(index.class_keys), images=f"{len(index):,}"
        )
        return text, gr.update(visible=False)

    def download_data(self, data_dir: str | None, request: gr.Request = None) -> Iterator[tuple[Any, Any, Any]]:
        """Download Stanford Dogs into the data folder, yielding progress; point the field at the result."""
        language = language_of(request)
        try:
            destination = resolve_data_folder(data_dir, self.settings)
        except DataFolderRejected as rejected:
            yield self._outside_root_text(rejected, language), gr.skip(), gr.skip()
            return
        # The archive unpacks into DEST/Images, so a requested ".../Images" (or the Kaggle ".../images") folder is
        # filled by downloading into its parent instead of growing a nested ".../Images/Images".
        if destination.name.lower() == "images" and not destination.exists():
            destination = destination.parent
        if not self._download_lock.acquire(blocking=False):
            yield message("download_busy", language), gr.skip(), gr.skip()
            return
        yield message("download_started", language, path=destination), gr.skip(), gr.skip()

        state: dict[str, Any] = {"file": "", "done": 0, "total": None, "result": None, "error": None}
        worker = threading.Thread(
            target=self._download_worker, args=(destination, state), name="dogbreeds-download", daemon=True
        )
        worker.start()
        last_text = ""
        while worker.is_alive():
            worker.join(timeout=WAIT_POLL_S)
            text = self._download_progress_text(state, destination, language)
            if text != last_text:
                last_text = text
                yield text, gr.skip(), gr.skip()

        if state["error"] is not None:
            yield message("download_failed", language, detail=state["error"]), gr.skip(), gr.update(visible=True)
            return
        result = state["result"]
        yield message("download_done", language, path=result), gr.update(value=str(result)), gr.update(visible=False)

    def _download_worker(self, destination: Path, state: dict[str, Any]) -> None:
        from dogbreeds.download import download_stanford_dogs

        def progress(filename: str, done: int, total: int | None) -> None:
            state.update(file=filename, done=done, total=total)

        try:
            state["result"] = download_stanford_dogs(destination, progress=progress)
        except Exception as error:  # noqa: BLE001 - the message goes to the page; the traceback to the log
            logger.exception("Downloading Stanford Dogs into %s failed", destination)
            state["error"] = str(error) or type(error).__name__
        finally:
            self._download_lock.release()

    @staticmethod
    def _download_progress_text(state: dict[str, Any], destination: Path, language: str) -> str:
        name = str(state["file"])
        if not name:
            return message("download_started", language, path=destination)
        done = f"{state['done'] / 1e6:,.0f}"
        total = f"{state['total'] / 1e6:,.0f}" if state["total"] else None
        # download_stanford_dogs reports extraction as "extracting <archive>".
        if name.startswith("extracting "):
            return message("download_extracting", language, file=name.removeprefix("extracting "), done=done,
                           total=total or "?")
        if total is not None:
            return message("download_progress", language, file=name, done=done, total=total)
        return message("download_progress_unknown", language, file=name, done=done)

    def _existing_data_folder(self, data_dir: str | None, language: str) -> Path:
        """Resolve the data folder and check that it exists; raise SettingRejected with the reason."""
        try:
            path = resolve_data_folder(data_dir, self.settings)
        except DataFolderRejected as rejected:
            raise SettingRejected(self._outside_root_text(rejected, language)) from rejected
        if not path.exists():
            raise SettingRejected(message("data_folder_missing", language, path=path), show_download=True)
        if not path.is_dir():
            raise SettingRejected(message("data_folder_not_dir", language, path=path))
        return path

    @staticmethod
    def _outside_root_text(rejected: DataFolderRejected, language: str) -> str:
        return message(
            "data_folder_outside_root", language, root=rejected.root, path=rejected.path,
            example=rejected.root / "Images",
        )

    # ----------------------------------------------------------------------------------------------------------
    # Training

    def architecture_changed(self, architecture: str) -> tuple[Any, Any]:
        """Set the image size to the architecture's default and allow pretrained weights only for resnet18."""
        from dogbreeds.models import DEFAULT_IMAGE_SIZE

        size = DEFAULT_IMAGE_SIZE.get(architecture)
        pretrained_allowed = architecture == "resnet18"
        size_update = gr.update(value=size) if size is not None else gr.skip()
        return size_update, gr.update(interactive=pretrained_allowed, value=False)

    def build_train_config(
        self,
        data_dir: str | None,
        architecture: str,
        device: str,
        epochs: Any,
        image_size: Any,
        batch_size: Any,
        learning_rate: Any,
        pretrained: bool,
        language: str = "en",
    ) -> tuple[Any, list[str]]:
        """Check the Train tab's values and return (TrainConfig, notes); raise SettingRejected with the reason."""
        from dogbreeds.config import TrainConfig
        from dogbreeds.folders import scan_image_folder
        from dogbreeds.runtime import available_devices

        path = self._existing_data_folder(data_dir, language)
        try:
            scan_image_folder(path)
        except (ValueError, OSError) as error:
            raise SettingRejected(message("data_folder_invalid", language, path=path, detail=error),
                                  show_download=True) from error

        devices = available_devices()
        if device not in devices:
            raise SettingRejected(
                message("train_invalid_setting", language,
                        detail=f"device {device!r} is not available here; choose one of {', '.join(devices)}.")
            )

        notes: list[str] = []
        epochs_value = _whole_number(epochs, "epochs", language)
        if self.settings.max_epochs is not None and epochs_value > self.settings.max_epochs:
            epochs_value = self.settings.max_epochs
            notes.append(message("train_epochs_capped", language, limit=epochs_value,
                                 images=format_count(self.settings.max_images)))
        size_value = _whole_number(image_size, "image size", language)
        batch_value = _whole_number(batch_size, "batch size", language)
        lr_value = _optional_positive(learning_rate, language)

        config = TrainConfig(
            train_dir=path,
            arch=architecture,
            image_size=size_value,
            epochs=epochs_value,
            batch_size=batch_value,
            lr=lr_value,
            device=device,
            out=self.settings.checkpoints_dir,
            cache_dir=self.settings.cache_dir,
            workers=self.settings.workers,
            pretrained=bool(pretrained) and architecture == "resnet18",
            max_images=self.settings.max_images,
        )
        try:
            config.validate()
        except ValueError as error:
            raise SettingRejected(message("train_invalid_setting", language, detail=error)) from error
        return config, notes

    def train(
        self,
        data_dir: str | None,
        architecture: str,
        device: str,
        epochs: Any,
        image_size: Any,
        batch_size: Any,
        learning_rate: Any,
        pretrained: bool,
        request: gr.Request = None,
    ) -> Iterator[tuple[Any, ...]]:
        """Train one run and stream the Train tab's values (see TRAIN_OUTPUTS) until it ends."""
        language = language_of(request)
        view = TrainView(language=language, status=message("train_checking", language))
        # The first yield lets a Stop or a closed page reach this generator before any slow step.
        yield view.frame(plots=False)

        try:
            config, notes = self.build_train_config(
                data_dir, architecture, device, epochs, image_size, batch_size, learning_rate, pretrained, language
            )
        except SettingRejected as rejected:
            view.status = rejected.text
            view.show_download = rejected.show_download
            yield view.frame(plots=False)
            return
        for note in notes:
            view.add_log(note)

        job = TrainingJob(session_of(request), config, after_fit=self._evaluate_after_fit)
        if not self.coordinator.register(job):
            view.status = message("train_already_running", language)
            yield view.frame(plots=False)
            return

        try:
            yield from self._wait_for_slot(job, view)
            if not job.started:
                return
            yield from self._follow(job, view)
        finally:
            if not job.started:
                self.coordinator.release(job)
            elif not job.finished.is_set():
                # The page was closed or the client cancelled, so no one follows this run any more. Stop it.
                logger.info("Train handler closed while session %s was training; stopping the run", job.session[:8])
                job.request_stop()

    def _wait_for_slot(self, job: TrainingJob, view: TrainView) -> Iterator[tuple[Any, ...]]:
        """Wait until no other training runs, then start `job`; return without starting it after a Stop."""
        waited_since = time.monotonic()
        while not self.coordinator.try_activate(job):
            if job.stop_event.is_set():
                self.coordinator.release(job)
                view.status = message("train_stopped_waiting", view.language)
                yield view.frame(plots=False)
                return
            view.status = message("train_waiting", view.language, seconds=int(time.monotonic() - waited_since))
            yield view.frame(plots=False)
            time.sleep(WAIT_POLL_S)

        if job.stop_event.is_set():
            self.coordinator.release(job)
            view.status = message("train_stopped_waiting", view.language)
            yield view.frame(plots=False)
            return

        view.status = message("train_preparing", view.language)
        view.started_at = time.monotonic()
        job.start(on_finish=self.coordinator.release)
        yield view.frame(plots=False)

    def _follow(self, job: TrainingJob, view: TrainView) -> Iterator[tuple[Any, ...]]:
        """Turn the job's events into page updates until the worker thread has finished."""
        last_text = 0.0
        last_plot = 0.0
        changed = False
        while True:
            events = job.drain(timeout=TEXT_INTERVAL_S)
            for event in events:
                self._apply_event(job, view, event)
                changed = True
            if job.stop_event.is_set() and not job.finished.is_set():
                stopping = message("train_stopping", view.language)
                changed = changed or view.status != stopping
                view.status = stopping

            if job.finished.is_set() and job.events.empty():
                break

            now = time.monotonic()
            # A plot change that had to wait for PLOT_INTERVAL_S goes out even when no new event arrives, for
            # example while a long validation pass runs.
            plot_due = view.curves.version != view.plotted_version and now - last_plot >= PLOT_INTERVAL_S
            if plot_due or (changed and now - last_text >= TEXT_INTERVAL_S):
                frame = view.frame(plots=plot_due)
                last_text = now
                if plot_due:
                    last_plot = now
                changed = False
                yield frame

        self._finish_view(job, view)
        yield view.frame(plots=True)

    def _apply_event(self, job: TrainingJob, view: TrainView, event: Any) -> None:
        """Update the view with one TrainEvent."""
        language = view.language
        if event.kind == "start":
            view.run_folder = str(event.run_dir or "")
            line = message("train_started", language, arch=job.config.arch, device=job.config.device,
                           split=event.message)
            view.status = line
            view.add_log(line)
            view.progress = (event.epoch - 1) / max(event.num_epochs, 1)
        elif event.kind == "batch":
            view.curves.add_batch(event.epoch, event.batch, event.num_batches, event.loss)
            loss = f"{event.loss:.3f}" if event.loss is not None else "n/a"
            view.status = message("train_progress", language, epoch=event.epoch, epochs=event.num_epochs,
                                  batch=event.batch, batches=event.num_batches, loss=loss)
            view.progress = (event.epoch - 1 + event.batch / max(event.num_batches, 1)) / max(event.num_epochs, 1)
        elif event.kind == "epoch":
            metrics = event.metrics or {}
            view.curves.add_epoch(metrics)
            view.add_log(event.message)
            view.status = message("train_epoch_done", language, epoch=event.epoch, epochs=event.num_epochs,
                                  top1=format_percent(metrics.get("val_top1")),
                                  top5=format_percent(metrics.get("val_top5")))
            view.progress = event.epoch / max(event.num_epochs, 1)
        elif event.kind == "end":
            view.run_folder = str(event.run_dir or view.run_folder)
        elif event.kind == "app" and event.name == "evaluating":
            view.status = message("train_evaluating", language)

    def _finish_view(self, job: TrainingJob, view: TrainView) -> None:
        """Fill status, summary, confusion matrix and run folder once the worker has finished."""
        language = view.language
        result = job.result
        if job.error is not None:
            detail = str(job.error) or type(job.error).__name__
            view.status = message("train_failed", language, detail=detail)
            view.add_log(view.status)
            view.run_folder = ""
            return

        completed = len(result.history)
        if result.stopped and not run_folder_exists(result):
            view.status = message("train_stopped_no_epoch", language)
            view.run_folder = ""
        elif result.stopped:
            view.status = message("train_stopped", language, epochs=completed)
        elif result.early_stopped:
            view.status = message("train_early_stopped", language, epochs=completed)
        else:
            view.status = message("train_finished", language, epochs=completed)
            view.progress = 1.0
        view.add_log(view.status)

        if run_folder_exists(result):
            view.summary = self._run_summary_markdown(result.run_dir, language)
            view.run_folder = str(result.run_dir)
        if job.after_fit_error is not None:
            view.add_log(message("train_evaluation_failed", language, detail=job.after_fit_error))
        evaluation = job.extra.get("evaluation")
        if evaluation is not None:
            image = Path(result.run_dir) / "confusion_matrix.png"
            view.confusion = str(image) if image.is_file() else None
            view.confused_pairs = self._confused_pairs_table(evaluation, language)

    def _evaluate_after_fit(self, job: TrainingJob) -> None:
        """Evaluate the best epoch on the validation images (confusion matrix, most-confused pairs)."""
        result = job.result
        # A stopped run ends at once, as the user asked; its confusion matrix can come from `python -m
        # dogbreeds.evaluate` later.
        if result is None or result.stopped or not run_folder_exists(result):
            return
        if not (Path(result.run_dir) / "model.safetensors").is_file():
            return
        job.events.put(_StatusEvent("evaluating"))
        job.extra["evaluation"] = evaluate_validation_split(job.config, result.run_dir)

    def _run_summary_markdown(self, run_dir: Path, language: str) -> str:
        from dogbreeds.checkpoint import CheckpointError, summarize_run

        try:
            summary = summarize_run(run_dir)
        except CheckpointError as error:
            return message("train_evaluation_failed", language, detail=error)
        text = "### " + message("summary_heading", language) + "\n\n" + message(
            "summary_table",
            language,
            arch=summary.architecture,
            params=format_count(summary.params),
            top1=format_percent(summary.best_top1),
            best_epoch=summary.best_epoch if summary.best_epoch is not None else "n/a",
            top5=format_percent(summary.best_top5),
            epochs=summary.epochs,
            seconds=format_duration(summary.train_seconds, language),
        )
        if summary.pretrained:
            text += "\n\n" + message("pretrained_note", language)
        return text

    @staticmethod
    def _confused_pairs_table(evaluation: dict[str, Any], language: str) -> Any:
        import pandas as pd

        columns = [
            message("column_true_breed", language),
            message("column_predicted_breed", language),
            message("column_count", language),
        ]
        rows = [_pair_row(pair) for pair in (evaluation.get("most_confused") or [])[:CONFUSED_PAIRS]]
        return pd.DataFrame([row for row in rows if row is not None], columns=columns)

    def plot_titles(self, request: gr.Request = None) -> tuple[Any, Any]:
        """Return updates that set the axis and legend titles of the two training plots in the user's language."""
        language = language_of(request)
        common = {"x_title": message("plot_epoch", language), "color_title": message("plot_series", language)}
        return (
            gr.update(y_title=message("plot_loss", language), **common),
            gr.update(y_title=message("plot_accuracy", language), **common),
        )

    def stop(self, request: gr.Request = None) -> str:
        """Ask this session's training to stop after the current batch (or to leave the queue)."""
        language = language_of(request)
        job = self.coordinator.request_stop(session_of(request))
        if job is None:
            return message("stop_nothing", language)
        return message("stop_requested", language)

    # ----------------------------------------------------------------------------------------------------------
    # Compare

    def run_choices(
        self, cnn_value: str | None = None, fcn_value: str | None = None, request: gr.Request = None
    ) -> tuple[Any, Any]:
        """Return dropdown updates listing CNN and FCN runs, keeping the current picks when they still exist."""
        language = language_of(request)
        return self._family_choices("cnn", cnn_value, language), self._family_choices("fcn", fcn_value, language)

    def _family_choices(self, family: str, current: str | None, language: str) -> Any:
        runs = self.registry.runs(family)
        choices = [(_run_label(run, language), run.value) for run in runs]
        values = [value for _, value in choices]
        selected = current if current in values else None
        if selected is None and values:
            selected = values[0]
        return gr.update(choices=choices, value=selected)

    def compare(
        self, photo: Any, cnn_run: str | None, fcn_run: str | None, request: gr.Request = None
    ) -> tuple[Any, str, Any, str, str]:
        """Classify one photo with the picked CNN and FCN runs: (cnn top-5, cnn info, fcn top-5, fcn info, notes)."""
        language = language_of(request)
        try:
            data = read_photo_bytes(photo, self.settings.max_upload_bytes)
            image = decode_photo(data, self.settings.max_image_pixels)
        except PhotoRejected as rejected:
            return None, "", None, "", message(rejected.key, language, **rejected.values)

        notes: list[str] = []
        cnn_top, cnn_info = self._predict_side(image, cnn_run, "cnn", language, notes)
        fcn_top, fcn_info = self._predict_side(image, fcn_run, "fcn", language, notes)
        return cnn_top, cnn_info, fcn_top, fcn_info, "\n\n".join(notes)

    def _predict_side(
        self, image: Any, value: str | None, family: str, language: str, notes: list[str]
    ) -> tuple[dict[str, float] | None, str]:
        """Predict with one picked run; add a note and return (None, "") when there is no usable run."""
        if not value:
            runs = self.registry.runs(family)
            if not runs:
                notes.append(message(f"compare_no_{family}_run", language))
                return None, ""
            value = runs[0].value

        known = self.registry.find(value)
        if known is None or known.summary.family != family:
            notes.append(message("compare_unknown_run", language, run=value))
            return None, ""

        from dogbreeds.checkpoint import CheckpointError

        try:
            predictor = self.predictors.get(known.summary.run_dir)
            top, milliseconds = predictor.predict_timed(image, k=5)
        except (CheckpointError, OSError, ValueError, RuntimeError) as error:
            logger.exception("Prediction with %s failed", value)
            notes.append(message("compare_run_failed", language, run=known.summary.name, detail=error))
            return None, ""

        info = message(
            "compare_model_info",
            language,
            arch=predictor.architecture,
            family=message(f"family_{predictor.family}", language),
            params=format_count(predictor.num_parameters),
            ms=f"{milliseconds:.1f}",
        )
        return top, info

    # ----------------------------------------------------------------------------------------------------------
    # Hub

    def load_hub(
        self, repo_id: str | None, revision: str | None = None, subfolder: str | None = None,
        request: gr.Request = None,
    ) -> tuple[str, Any, Any]:
        """Download a run from the Hub and add it to the pickers: (message, CNN dropdown, FCN dropdown)."""
        language = language_of(request)
        text, known = self._load_hub_run(repo_id or "", revision, subfolder, language)
        cnn_value = known.value if known is not None and known.summary.family == "cnn" else None
        fcn_value = known.value if known is not None and known.summary.family == "fcn" else None
        cnn_update, fcn_update = self.run_choices(cnn_value, fcn_value, request)
        if known is None:
            # A failed load leaves the user's current picks alone.
            cnn_update, fcn_update = gr.skip(), gr.skip()
        return text, cnn_update, fcn_update

    def _load_hub_run(
        self, repo_id: str, revision: str | None, subfolder: str | None, language: str
    ) -> tuple[str, KnownRun | None]:
        from dogbreeds.checkpoint import CheckpointError
        from dogbreeds.hub import HubError, download_run

        try:
            hub_run = download_run(repo_id, revision=revision, subfolder=subfolder, **self.hub_options)
            known = self.registry.add_hub_run(hub_run)
        except HubError as error:
            return hub_error_text(error, language), None
        except CheckpointError as error:
            return message("hub_invalid_run", language, repo=repo_id, detail=error), None

        text = message(
            "hub_loaded",
            language,
            spec=hub_run.label,
            arch=known.summary.architecture,
            commit=(hub_run.commit or "?")[:10],
            family=message(f"family_{known.summary.family}", language),
        )
        return text, known

    def preload_hub_runs(self, specs: str | None = None) -> list[str]:
        """Load the runs named in DOGBREEDS_HUB_REPO (or `specs`); return one English line per repo, for the log."""
        from dogbreeds.hub import HubError, parse_repo_specs

        text = self.settings.hub_repos if specs is None else specs
        if not text:
            return []
        try:
            parsed = parse_repo_specs(text)
        except HubError as error:
            logger.error("DOGBREEDS_HUB_REPO=%r: %s", text, error)
            return [str(error)]

        lines = []
        for repo_id, revision, subfolder in parsed:
            line, _ = self._load_hub_run(repo_id, revision, subfolder, "en")
            logger.info("Hub preload %s: %s", repo_id, line)
            lines.append(line)
        return lines

    # ----------------------------------------------------------------------------------------------------------
    # Results

    def results(self, request: gr.Request = None) -> tuple[str, Any, Any, Any]:
        """Return the Results tab: (message, runs table, validation-loss curves, validation top-1 curves)."""
        import pandas as pd

        language = language_of(request)
        runs = self.registry.runs()
        columns = [
            message(f"column_{key}", language)
            for key in ("run", "architecture", "family", "parameters", "top1", "top5", "epochs", "train_time",
                        "pretrained")
        ]
        rows = []
        loss_rows: list[tuple[float, float, str]] = []
        top1_rows: list[tuple[float, float, str]] = []
        for run in runs:
            summary = run.summary
            name = _run_name(run)
            rows.append([
                name,
                summary.architecture,
                message(f"family_{summary.family}", language),
                format_count(summary.params),
                format_percent(summary.best_top1),
                format_percent(summary.best_top5),
                summary.epochs,
                format_duration(summary.train_seconds, language),
                message("yes" if summary.pretrained else "no", language),
            ])
            for entry in summary.history:
                epoch = entry.get("epoch")
                if not isinstance(epoch, (int, float)):
                    continue
                if isinstance(entry.get("val_loss"), (int, float)):
                    loss_rows.append((float(epoch), float(entry["val_loss"]), name))
                if isinstance(entry.get("val_top1"), (int, float)):
                    top1_rows.append((float(epoch), 100.0 * float(entry["val_top1"]), name))

        text = message("results_count", language, count=len(runs)) if runs else message("results_none", language)
        names = [_run_name(run) for run in runs]
        # A colour map naming every run makes the plot rebuild its legend when the set of runs changes.
        color_map = {name: PALETTE[position % len(PALETTE)] for position, name in enumerate(names)}
        loss_frame = pd.DataFrame(loss_rows, columns=["epoch", "value", "series"])
        top1_frame = pd.DataFrame(top1_rows, columns=["epoch", "value", "series"])
        titles = {"x_title": message("plot_epoch", language), "color_title": message("plot_run", language)}
        return (
            text,
            pd.DataFrame(rows, columns=columns),
            gr.update(value=loss_frame, color_map=color_map or None, y_title=message("plot_loss", language),
                      **titles),
            gr.update(value=top1_frame, color_map=color_map or None, y_title=message("plot_accuracy", language),
                      **titles),
        )


@dataclass
class _StatusEvent:
    """A status change sent by the app itself through the job's event queue (not by fit())."""

    name: str
    kind: str = "app"


def evaluate_validation_split(config: Any, run_dir: Path) -> dict[str, Any]:
    """Evaluate the run's best weights on its validation images and write evaluation.json and confusion_matrix.png."""
    from dogbreeds.evaluate import evaluate

    # evaluate() takes only the validation split when given the folder the run was trained on.
    return evaluate(run_dir, config.train_dir, batch_size=config.batch_size, device=config.device,
                    workers=config.workers)


def hub_error_text(error: Any, language: str) -> str:
    """Translate a hub.HubError into the user's language by its kind."""
    key = f"hub_{error.kind}"
    return message(
        key,
        language,
        repo=error.repo_id or "?",
        revision=error.revision or "main",
        file=error.filename or "?",
        detail=error.detail or str(error),
    )


def _run_name(run: KnownRun) -> str:
    return f"hub:{run.hub.label}" if run.hub is not None else run.summary.name


def _run_label(run: KnownRun, language: str) -> str:
    summary = run.summary
    if run.hub is not None:
        return message("run_choice_hub", language, spec=run.hub.label, arch=summary.architecture,
                       top1=format_percent(summary.best_top1))
    return message("run_choice", language, name=summary.name, arch=summary.architecture,
                   top1=format_percent(summary.best_top1))


def _pair_row(pair: Any) -> list[Any] | None:
    """Turn one most-confused entry (a dict or a (true, predicted, count) sequence) into a table row."""
    if isinstance(pair, dict):
        true_name = pair.get("true") or pair.get("true_name") or pair.get("actual")
        predicted = pair.get("predicted") or pair.get("predicted_name")
        count = pair.get("count")
        if true_name is None or predicted is None:
            return None
        return [true_name, predicted, count]
    if isinstance(pair, (list, tuple)) and len(pair) >= 3:
        return [pair[0], pair[1], pair[2]]
    return None


def _whole_number(value: Any, name: str, language: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise SettingRejected(
            message("train_invalid_setting", language, detail=f"{name} must be a whole number, got {value!r}.")
        )
    return int(number)


def _optional_positive(value: Any, language: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if number == 0:
        return None
    if not math.isfinite(number) or number < 0:
        raise SettingRejected(
            message("train_invalid_setting", language,
                    detail=f"learning rate must be a positive number (or empty for the default), got {value!r}.")
        )
    return number
