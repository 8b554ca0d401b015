"""Gradio app for dogbreeds: train a model, compare a CNN with a fully-connected network, and list the results.

`python app.py` serves the app on http://127.0.0.1:7860 (GRADIO_SERVER_NAME and GRADIO_SERVER_PORT change
that); Hugging Face Spaces starts it the same way. Importing this module builds and loads nothing: main() reads
the settings (see dogbreeds/ui/settings.py), loads the Hub runs named in DOGBREEDS_HUB_REPO and launches.
This file only lays out components; the handlers live in dogbreeds/ui/handlers.py.
"""

import os

# Gradio and huggingface_hub read these once, at import, so they are set before either is imported: no usage
# statistics or telemetry leave the machine.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["DO_NOT_TRACK"] = "1"

import functools  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402

from dogbreeds.ui.components import UploadedImage  # noqa: E402
from dogbreeds.ui.handlers import AppHandlers  # noqa: E402
from dogbreeds.ui.settings import AppSettings  # noqa: E402
from dogbreeds.ui.text import i18n_tables  # noqa: E402

logger = logging.getLogger("dogbreeds.app")

# Trainings that may wait in the handler at once (each shows "another training is running"); further Start
# clicks wait in Gradio's queue and see their queue position.
TRAIN_CONCURRENCY = 4
EXAMPLE_PHOTOS = 8
# Gradio rejects bigger uploads outright; the Compare handler explains anything above settings.max_upload_bytes.
UPLOAD_HARD_LIMIT_FACTOR = 4

CSS = """
.dogbreeds-progress { display: flex; align-items: center; gap: 0.75em; }
.dogbreeds-progress progress { flex: 0 0 40%; height: 0.9em; }
"""


def build_app(settings: AppSettings | None = None, handlers: AppHandlers | None = None) -> gr.Blocks:
    """Build the Blocks (three tabs and their events); launch it with `launch_options(settings)`."""
    from dogbreeds.models import DEFAULT_IMAGE_SIZE, MODEL_NAMES
    from dogbreeds.runtime import available_devices

    settings = settings or AppSettings.from_env()
    handlers = handlers or AppHandlers(settings)
    i18n = gr.I18n(**i18n_tables())
    devices = available_devices()
    epoch_limit = settings.max_epochs or 100

    with gr.Blocks(title="Dog breeds: CNN vs fully-connected") as demo:
        gr.Markdown(i18n("app_title"))
        gr.Markdown(i18n("app_intro"))

        with gr.Tabs():
            with gr.Tab(i18n("tab_train"), id="train", elem_id="tab_train"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        data_dir = gr.Textbox(
                            value=str(settings.default_data_dir), label=i18n("train_data_folder"), elem_id="data_dir"
                        )
                        data_note = gr.Markdown(elem_id="data_note")
                        with gr.Row(visible=False, elem_id="download_row") as download_row:
                            download_button = gr.Button(i18n("train_download"), elem_id="download_button")
                        download_status = gr.Markdown(elem_id="download_status")
                        architecture = gr.Radio(
                            list(MODEL_NAMES), value="custom_cnn", label=i18n("train_architecture"),
                            elem_id="architecture",
                        )
                        device = gr.Dropdown(devices, value=devices[0], label=i18n("train_device"), elem_id="device")
                        epochs = gr.Slider(
                            1, epoch_limit, value=min(10, epoch_limit), step=1, label=i18n("train_epochs"),
                            elem_id="epochs",
                        )
                        # Steps of 8 px keep every value valid for resfcn18, which needs a multiple of 8.
                        image_size = gr.Slider(
                            32, 224, value=DEFAULT_IMAGE_SIZE["custom_cnn"], step=8, label=i18n("train_image_size"),
                            elem_id="image_size",
                        )
                        batch_size = gr.Number(
                            value=64, precision=0, minimum=2, maximum=1024, label=i18n("train_batch_size"),
                            elem_id="batch_size",
                        )
                        # The browser shows an empty number as 0, so 0 stands for "the architecture's default".
                        learning_rate = gr.Number(value=0, minimum=0, label=i18n("train_learning_rate"),
                                                  elem_id="learning_rate")
                        pretrained = gr.Checkbox(value=False, interactive=False, label=i18n("train_pretrained"),
                                                 elem_id="pretrained")
                        with gr.Row():
                            start_button = gr.Button(i18n("train_start"), variant="primary", elem_id="start_button")
                            stop_button = gr.Button(i18n("train_stop"), variant="stop", elem_id="stop_button")

                    with gr.Column(scale=2):
                        progress = gr.HTML(elem_id="train_progress")
                        status = gr.Markdown(elem_id="train_status")
                        with gr.Row():
                            # Axis and legend titles come from handlers.plot_titles in the browser's language:
                            # gr.I18n keys there sometimes reach the chart untranslated (Gradio 6.31).
                            loss_plot = gr.LinePlot(
                                x="epoch", y="value", color="series", label=i18n("train_loss_plot"),
                                elem_id="loss_plot",
                            )
                            accuracy_plot = gr.LinePlot(
                                x="epoch", y="value", color="series", label=i18n("train_accuracy_plot"),
                                y_lim=[0, 100], elem_id="accuracy_plot",
                            )
                        log = gr.Textbox(label=i18n("train_log"), lines=6, max_lines=12, autoscroll=True,
                                         interactive=False, elem_id="train_log")
                        summary = gr.Markdown(elem_id="train_summary")
                        with gr.Row():
                            confusion = gr.Image(type="filepath", label=i18n("train_confusion"), interactive=False,
                                                 visible=False, elem_id="confusion_matrix")
                            confused_pairs = gr.Dataframe(label=i18n("train_confused_pairs"), interactive=False,
                                                          visible=False, elem_id="confused_pairs")
                        run_folder = gr.Textbox(label=i18n("train_run_folder"), interactive=False,
                                                elem_id="run_folder")

            with gr.Tab(i18n("tab_compare"), id="compare", elem_id="tab_compare"):
                with gr.Row():
                    with gr.Column():
                        photo = UploadedImage(
                            type="filepath", sources=["upload", "webcam", "clipboard"], label=i18n("compare_photo"),
                            elem_id="photo", height=320,
                        )
                        examples = example_photos(settings)
                        if examples:
                            gr.Examples([[path] for path in examples], inputs=[photo], label=i18n("compare_examples"))
                    with gr.Column():
                        cnn_run = gr.Dropdown(label=i18n("compare_cnn_run"), allow_custom_value=True,
                                              elem_id="cnn_run")
                        fcn_run = gr.Dropdown(label=i18n("compare_fcn_run"), allow_custom_value=True,
                                              elem_id="fcn_run")
                        with gr.Row():
                            compare_button = gr.Button(i18n("compare_button"), variant="primary",
                                                       elem_id="compare_button")
                            refresh_runs_button = gr.Button(i18n("compare_refresh"), elem_id="refresh_runs")
                        with gr.Accordion(i18n("hub_heading"), open=False, elem_id="hub_box"):
                            repo_id = gr.Textbox(label=i18n("hub_repo_id"), placeholder="owner/name",
                                                 elem_id="hub_repo_id")
                            with gr.Row():
                                revision = gr.Textbox(label=i18n("hub_revision"), elem_id="hub_revision")
                                subfolder = gr.Textbox(label=i18n("hub_subfolder"), elem_id="hub_subfolder")
                            load_button = gr.Button(i18n("hub_load"), elem_id="hub_load")
                            hub_message = gr.Markdown(elem_id="hub_message")
                compare_message = gr.Markdown(elem_id="compare_message")
                with gr.Row():
                    with gr.Column():
                        cnn_top5 = gr.Label(num_top_classes=5, label=i18n("compare_cnn_top5"), elem_id="cnn_top5")
                        cnn_info = gr.Markdown(elem_id="cnn_info")
                    with gr.Column():
                        fcn_top5 = gr.Label(num_top_classes=5, label=i18n("compare_fcn_top5"), elem_id="fcn_top5")
                        fcn_info = gr.Markdown(elem_id="fcn_info")

            with gr.Tab(i18n("tab_results"), id="results", elem_id="tab_results"):
                results_button = gr.Button(i18n("results_refresh"), elem_id="results_refresh")
                results_message = gr.Markdown(elem_id="results_message")
                results_table = gr.Dataframe(label=i18n("results_table"), interactive=False, elem_id="results_table")
                with gr.Row():
                    loss_curves = gr.LinePlot(
                        x="epoch", y="value", color="series", label=i18n("results_loss_curves"),
                        elem_id="results_loss",
                    )
                    top1_curves = gr.LinePlot(
                        x="epoch", y="value", color="series", label=i18n("results_top1_curves"),
                        elem_id="results_top1",
                    )

        # --- events -------------------------------------------------------------------------------------------
        train_inputs = [data_dir, architecture, device, epochs, image_size, batch_size, learning_rate, pretrained]
        train_outputs = [status, progress, loss_plot, accuracy_plot, log, summary, confusion, confused_pairs,
                         run_folder, download_row]
        run_pickers = [cnn_run, fcn_run]
        results_outputs = [results_message, results_table, loss_curves, top1_curves]

        architecture.change(handlers.architecture_changed, architecture, [image_size, pretrained],
                            api_visibility="private", queue=False)
        gr.on([data_dir.submit, data_dir.blur], handlers.check_data_folder, data_dir, [data_note, download_row],
              api_visibility="private")
        download_button.click(handlers.download_data, data_dir, [download_status, data_dir, download_row],
                              api_visibility="private", concurrency_limit=1, concurrency_id="download")

        # Public endpoints are registered first: a later listener of the same function would take its api_name.
        results_button.click(handlers.results, None, results_outputs, api_name="results")
        train_event = start_button.click(
            handlers.train, train_inputs, train_outputs, api_name="train", concurrency_limit=TRAIN_CONCURRENCY,
            concurrency_id="train", trigger_mode="once", show_progress="hidden",
        )
        train_event.then(handlers.run_choices, run_pickers, run_pickers, api_visibility="private").then(
            handlers.results, None, results_outputs, api_visibility="private"
        )
        # Stop only sets a flag, so it returns at once, outside the queue, even while every worker is busy.
        stop_button.click(handlers.stop, None, status, api_name="stop", queue=False)

        compare_inputs = [photo, cnn_run, fcn_run]
        compare_outputs = [cnn_top5, cnn_info, fcn_top5, fcn_info, compare_message]
        compare_button.click(handlers.compare, compare_inputs, compare_outputs, api_name="compare",
                             concurrency_limit=2, concurrency_id="compare")
        photo.change(handlers.compare, compare_inputs, compare_outputs, api_visibility="private",
                     concurrency_limit=2, concurrency_id="compare", trigger_mode="always_last")
        refresh_runs_button.click(handlers.run_choices, run_pickers, run_pickers, api_visibility="private")
        load_button.click(handlers.load_hub, [repo_id, revision, subfolder], [hub_message, cnn_run, fcn_run],
                          api_name="load_hub", concurrency_limit=1, concurrency_id="hub")


        demo.load(handlers.check_data_folder, data_dir, [data_note, download_row], api_visibility="private")
        demo.load(handlers.plot_titles, None, [loss_plot, accuracy_plot], api_visibility="private")
        demo.load(handlers.run_choices, run_pickers, run_pickers, api_visibility="private")
        demo.load(handlers.results, None, results_outputs, api_visibility="private")

    demo.queue(default_concurrency_limit=1)
    return demo


def example_photos(settings: AppSettings, count: int = EXAMPLE_PHOTOS) -> list[str]:
    """Pick `count` photos from different breeds of the default data folder; none when it is missing or invalid."""
    return list(_example_photos(settings.default_data_dir.resolve(), count))


@functools.lru_cache(maxsize=4)
def _example_photos(data_dir: Path, count: int) -> tuple[str, ...]:
    # Cached because build_app() and launch_options() both need the list and a scan lists every file.
    from dogbreeds.folders import scan_image_folder

    try:
        index = scan_image_folder(data_dir)
    except (ValueError, OSError) as error:
        logger.info("No example photos: %s", error)
        return ()

    first_per_class: dict[int, Path] = {}
    for path, label in zip(index.paths, index.labels):
        first_per_class.setdefault(label, path)
    labels = sorted(first_per_class)
    if not labels:
        return ()
    # Evenly spaced breeds, so the examples do not all come from the start of the alphabet.
    step = max(len(labels) / count, 1.0)
    chosen = sorted({labels[int(position * step)] for position in range(min(count, len(labels)))})
    return tuple(str(first_per_class[label].resolve()) for label in chosen)


def launch_options(settings: AppSettings) -> dict[str, Any]:
    """Return the launch() arguments: translations, no share link, no run history, no external services."""
    allowed = [str(settings.checkpoints_dir.resolve())]
    allowed += example_photos(settings)
    return {
        "i18n": gr.I18n(**i18n_tables()),
        "css": CSS,
        "share": False,
        "run_history": False,
        "footer_links": ["api", "settings"],
        "enable_monitoring": False,
        "max_file_size": settings.max_upload_bytes * UPLOAD_HARD_LIMIT_FACTOR,
        "allowed_paths": allowed,
    }


def main() -> int:
    """Read the settings, load the Hub runs named in DOGBREEDS_HUB_REPO, and serve the app until interrupted."""
    from dogbreeds.runtime import configure_allocator, setup_logging

    setup_logging()
    configure_allocator()
    try:
        settings = AppSettings.from_env()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    handlers = AppHandlers(settings)
    for line in handlers.preload_hub_runs():
        logger.info("%s", line)
    demo = build_app(settings, handlers)
    demo.launch(**launch_options(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
