"""Tests of the app's handler functions, called directly, and of its text tables, settings and helpers."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import gradio
import pandas as pd
import pytest
from _app_helpers import FakeHub, app_settings, make_dataset, run_files, trained_runs
from PIL import Image

from dogbreeds.ui import handlers as handlers_module
from dogbreeds.ui.handlers import TRAIN_OUTPUTS, AppHandlers, hub_error_text
from dogbreeds.ui.photos import PhotoRejected, decode_photo, is_heif, read_photo_bytes
from dogbreeds.ui.runs import PredictorCache
from dogbreeds.ui.settings import AppSettings, DataFolderRejected, resolve_data_folder
from dogbreeds.ui.text import LABELS, MESSAGES, i18n_tables, language_from_header, message
from dogbreeds.ui.training import LiveCurves, TrainingJob

HEIC_BYTES = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64


class FakeRequest:
    """The parts of gr.Request the handlers read."""

    def __init__(self, language: str = "en-US,en;q=0.9", session: str = "session-a") -> None:
        self.headers = {"accept-language": language}
        self.session_hash = session


EN = FakeRequest()
KO = FakeRequest("ko-KR,ko;q=0.9,en-US;q=0.8")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return trained_runs(tmp_path_factory.mktemp("app-runs"))


@pytest.fixture
def settings(tmp_path) -> AppSettings:
    return app_settings(tmp_path)


@pytest.fixture
def app(settings) -> AppHandlers:
    return AppHandlers(settings)


@pytest.fixture
def app_with_runs(tmp_path, runs) -> AppHandlers:
    checkpoints = tmp_path / "checkpoints"
    for arch in ("custom_cnn", "resfcn18"):
        shutil.copytree(runs[arch], checkpoints / runs[arch].name)
    return AppHandlers(app_settings(tmp_path))


def _photo(path: Path, size: tuple[int, int] = (48, 40), color=(200, 30, 30), format: str = "JPEG") -> Path:
    Image.new("RGB", size, color).save(path, format=format)
    return path


def _outputs(frame: tuple) -> dict:
    return dict(zip(TRAIN_OUTPUTS, frame))


# --- text tables ---------------------------------------------------------------------------------------------


def _gradio_translation_groups() -> set[str]:
    """Read the top-level translation groups from gradio's bundled English table (exported names)."""
    assets = Path(gradio.__file__).parent / "templates" / "frontend" / "assets"
    english = sorted(assets.glob("en-*.js"))
    assert english, f"no en-*.js translation table found in {assets}"
    source = english[0].read_text(encoding="utf-8")
    exports = re.search(r"export\{(.*?)\}", source)
    assert exports is not None
    return {item.split(" as ")[-1].strip() for item in exports.group(1).split(",")}


def test_gradio_groups_are_read():
    groups = _gradio_translation_groups()
    assert {"status", "image", "label", "upload_text", "common", "errors"} <= groups


def test_label_keys_avoid_gradio_groups():
    collisions = set(LABELS) & _gradio_translation_groups()
    assert collisions == set()


@pytest.mark.parametrize("table_name", ["LABELS", "MESSAGES"])
def test_every_key_has_english_and_korean(table_name):
    table = {"LABELS": LABELS, "MESSAGES": MESSAGES}[table_name]
    for key, texts in table.items():
        assert set(texts) == {"en", "ko"}, key
        assert texts["en"].strip(), key
        assert texts["ko"].strip(), key


def test_korean_text_is_korean():
    hangul = re.compile("[\uac00-\ud7a3]")
    untranslated = [key for key, texts in LABELS.items() if not hangul.search(texts["ko"])]
    # Labels that are only names (tab titles in English are translated, so none are expected here).
    assert untranslated == []


def test_message_placeholders_match():
    field = re.compile(r"\{(\w+)")
    for key, texts in MESSAGES.items():
        assert set(field.findall(texts["en"])) == set(field.findall(texts["ko"])), key


def test_i18n_tables_shape():
    tables = i18n_tables()
    assert set(tables) == {"en", "ko"}
    assert tables["ko"]["tab_train"] == "학습"
    assert tables["en"]["tab_compare"] == "Compare"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7", "ko"),
        ("en-US,en;q=0.9,ko;q=0.8", "en"),
        ("fr-FR,fr;q=0.9,ko;q=0.5", "ko"),
        ("fr-FR", "en"),
        ("", "en"),
        (None, "en"),
        ("ko;q=0", "en"),
        ("KO", "ko"),
        ("ko;q=bad, en;q=0.5", "en"),
    ],
)
def test_language_from_header(header, expected):
    assert language_from_header(header) == expected


def test_message_falls_back_to_english():
    assert message("stop_nothing", "de") == MESSAGES["stop_nothing"]["en"]


# --- settings ------------------------------------------------------------------------------------------------


def test_settings_local_defaults():
    settings = AppSettings.from_env({})
    assert settings.on_space is False
    assert settings.data_root is None
    assert settings.default_data_dir == Path("images/images")
    assert settings.max_epochs is None
    assert settings.max_images is None
    assert settings.max_upload_bytes == 20_000_000


def test_settings_on_space(tmp_path):
    settings = AppSettings.from_env({"SPACE_ID": "alice/dogs", "DOGBREEDS_DATA_ROOT": str(tmp_path)})
    assert settings.on_space is True
    assert settings.data_root == tmp_path.resolve()
    assert settings.default_data_dir == tmp_path.resolve() / "Images"
    assert settings.max_epochs == 3
    assert settings.max_images == 2400


@pytest.mark.parametrize(
    ("name", "value"),
    [("DOGBREEDS_SPACE_MAX_EPOCHS", "three"), ("DOGBREEDS_SPACE_MAX_EPOCHS", "0"), ("DOGBREEDS_MAX_UPLOAD_MB", "-1")],
)
def test_settings_reject_malformed_values(name, value):
    with pytest.raises(ValueError, match=name):
        AppSettings.from_env({"SPACE_ID": "alice/dogs", name: value})


def test_data_root_confines_folders(tmp_path):
    root = tmp_path / "root"
    (root / "Images").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    settings = replace(app_settings(tmp_path), data_root=root.resolve())

    assert resolve_data_folder("Images", settings) == (root / "Images").resolve()
    assert resolve_data_folder(str(root / "Images"), settings) == (root / "Images").resolve()
    for bad in (str(outside), "../outside", "/etc", "link", "Images/../../outside"):
        with pytest.raises(DataFolderRejected):
            resolve_data_folder(bad, settings)


def test_data_folder_unconfined_locally(tmp_path, settings):
    assert resolve_data_folder(str(tmp_path / "any"), settings) == tmp_path / "any"
    assert resolve_data_folder("", settings) == settings.default_data_dir


# --- data folder and download -----------------------------------------------------------------------------------


def test_check_missing_folder_offers_download(app, tmp_path):
    text, row = app.check_data_folder(str(tmp_path / "nowhere"), EN)
    assert "not found" in text
    assert str(tmp_path / "nowhere") in text
    assert row["visible"] is True


def test_check_missing_folder_in_korean(app, tmp_path):
    text, _ = app.check_data_folder(str(tmp_path / "nowhere"), KO)
    assert "찾을 수 없습니다" in text


def test_check_folder_outside_data_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    app = AppHandlers(replace(app_settings(tmp_path), on_space=True, data_root=root.resolve()))
    text, row = app.check_data_folder("/etc", EN)
    assert "outside" in text
    assert str(root.resolve()) in text
    assert row["visible"] is False


def test_check_ready_folder(app, tmp_path):
    data = make_dataset(tmp_path / "data", images_per_class=2)
    text, row = app.check_data_folder(str(data), EN)
    assert "3 breeds" in text
    assert "6 images" in text
    assert row["visible"] is False


def test_check_folder_without_classes(app, tmp_path):
    (tmp_path / "empty").mkdir()
    text, row = app.check_data_folder(str(tmp_path / "empty"), EN)
    assert "cannot be used" in text
    assert row["visible"] is True


def test_check_file_instead_of_folder(app, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    text, _ = app.check_data_folder(str(tmp_path / "file.txt"), EN)
    assert "is a file" in text


def test_download_points_field_at_result(app, tmp_path, monkeypatch):
    import dogbreeds.download

    calls = []

    def fake_download(dest, *, progress=None, **kwargs):
        calls.append(dest)
        progress("images.tar", 5_000_000, 10_000_000)
        time.sleep(0.6)
        progress("extracting images.tar", 2_000_000, 10_000_000)
        time.sleep(0.6)
        images = Path(dest) / "Images"
        make_dataset(images, images_per_class=1)
        return images

    monkeypatch.setattr(dogbreeds.download, "download_stanford_dogs", fake_download)
    updates = list(app.download_data(str(tmp_path / "dogs"), EN))

    assert calls == [tmp_path / "dogs"]
    texts = [update[0] for update in updates]
    assert any("5 of 10 MB" in text for text in texts)
    assert any(text.startswith("Extracting `images.tar`") for text in texts)
    final_text, field, row = updates[-1]
    assert "ready" in final_text
    assert field["value"] == str(tmp_path / "dogs" / "Images")
    assert row["visible"] is False


def test_download_into_images_folder_uses_parent(tmp_path, monkeypatch):
    import dogbreeds.download

    root = tmp_path / "root"
    root.mkdir()
    app = AppHandlers(replace(app_settings(tmp_path), on_space=True, data_root=root.resolve()))
    calls = []

    def fake_download(dest, *, progress=None, **kwargs):
        calls.append(dest)
        make_dataset(Path(dest) / "Images", images_per_class=1)
        return Path(dest) / "Images"

    monkeypatch.setattr(dogbreeds.download, "download_stanford_dogs", fake_download)
    final_text, field, _ = list(app.download_data("Images", EN))[-1]

    assert calls == [root.resolve()]
    assert field["value"] == str(root.resolve() / "Images")
    assert "ready" in final_text


def test_download_failure_is_reported(app, tmp_path, monkeypatch):
    import dogbreeds.download

    def failing(dest, *, progress=None, **kwargs):
        raise dogbreeds.download.DownloadError("connection reset after 3 MB; run the download again to resume")

    monkeypatch.setattr(dogbreeds.download, "download_stanford_dogs", failing)
    final_text, field, row = list(app.download_data(str(tmp_path / "dogs"), KO))[-1]
    assert "내려받기에 실패했습니다" in final_text
    assert "connection reset" in final_text
    assert row["visible"] is True


def test_download_outside_data_root(tmp_path, monkeypatch):
    import dogbreeds.download

    monkeypatch.setattr(dogbreeds.download, "download_stanford_dogs", lambda *a, **k: pytest.fail("downloaded"))
    root = tmp_path / "root"
    root.mkdir()
    app = AppHandlers(replace(app_settings(tmp_path), on_space=True, data_root=root.resolve()))
    final_text = list(app.download_data(str(tmp_path / "elsewhere"), EN))[-1][0]
    assert "outside" in final_text


# --- training --------------------------------------------------------------------------------------------------


def _train(app, data_dir, request=EN, **overrides):
    values = {
        "architecture": "custom_cnn", "device": "cpu", "epochs": 1, "image_size": 32, "batch_size": 4,
        "learning_rate": None, "pretrained": False,
    }
    values.update(overrides)
    return app.train(str(data_dir), values["architecture"], values["device"], values["epochs"], values["image_size"],
                     values["batch_size"], values["learning_rate"], values["pretrained"], request)


def test_train_missing_folder(app, tmp_path):
    frames = [_outputs(frame) for frame in _train(app, tmp_path / "nowhere")]
    assert "not found" in frames[-1]["status"]
    assert frames[-1]["download_row"]["visible"] is True
    assert app.coordinator.running is None


def test_train_outside_data_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    app = AppHandlers(replace(app_settings(tmp_path), on_space=True, data_root=root.resolve()))
    data = make_dataset(tmp_path / "data", images_per_class=2)
    status = _outputs(list(_train(app, data, KO))[-1])["status"]
    assert "밖에 있습니다" in status


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"device": "cuda:7"}, "not available"),
        ({"learning_rate": -0.1}, "learning rate"),
        ({"epochs": 2.5}, "epochs must be a whole number"),
        ({"batch_size": 1}, "atch size must be at least 2"),
        ({"architecture": "resfcn18", "image_size": 36}, "multiple of 8"),
        ({"architecture": "vgg"}, "Unknown architecture"),
    ],
)
def test_train_rejects_bad_settings(app, tmp_path, overrides, expected):
    data = make_dataset(tmp_path / "data", images_per_class=2)
    status = _outputs(list(_train(app, data, **overrides))[-1])["status"]
    assert expected in status


def test_train_caps_epochs_on_space(tmp_path):
    root = tmp_path / "root"
    data = make_dataset(root / "Images", images_per_class=2)
    settings = replace(app_settings(tmp_path), on_space=True, data_root=root.resolve(), max_epochs=2, max_images=40)
    config, notes = AppHandlers(settings).build_train_config(
        str(data), "custom_cnn", "cpu", 50, 32, 4, None, False, "en"
    )
    assert config.epochs == 2
    assert config.max_images == 40
    assert "at most 2 epochs" in notes[0]


def test_pretrained_only_for_resnet18(app, tmp_path):
    data = make_dataset(tmp_path / "data", images_per_class=2)
    config, _ = app.build_train_config(str(data), "custom_cnn", "cpu", 1, 32, 4, None, True, "en")
    assert config.pretrained is False
    size, pretrained = app.architecture_changed("resnet18")
    assert size["value"] == 128
    assert pretrained["interactive"] is True
    _, pretrained = app.architecture_changed("resfcn18")
    assert pretrained["interactive"] is False


@pytest.mark.slow
def test_train_runs_to_the_end(app, tmp_path):
    data = make_dataset(tmp_path / "data", images_per_class=6)
    frames = [_outputs(frame) for frame in _train(app, data, epochs=2)]

    final = frames[-1]
    assert "finished after 2 epochs" in final["status"]
    run_dir = Path(final["run_folder"])
    assert (run_dir / "model.safetensors").is_file()
    assert "**Architecture:** custom_cnn" in final["summary"]
    assert "Training custom_cnn on cpu" in final["log"]
    assert final["confusion"]["value"] == str(run_dir / "confusion_matrix.png")
    assert final["confusion"]["visible"] is True
    assert Path(final["confusion"]["value"]).is_file()
    assert list(final["confused_pairs"]["value"].columns) == ["true breed", "predicted as", "count"]
    assert frames[0]["confusion"]["visible"] is False
    assert (run_dir / "evaluation.json").is_file()
    loss = [frame["loss_plot"] for frame in frames if isinstance(frame["loss_plot"], pd.DataFrame)][-1]
    accuracy = [frame["accuracy_plot"] for frame in frames if isinstance(frame["accuracy_plot"], pd.DataFrame)][-1]
    assert set(loss["series"]) == {"train loss", "validation loss", "batch loss (smoothed)"}
    assert loss[loss["series"] == "validation loss"]["value"].notna().sum() == 2
    assert accuracy["value"].dropna().between(0, 100).all()
    # Every plotted frame names all series, so the browser's legend is complete from the first frame on.
    plotted = [frame["loss_plot"] for frame in frames if isinstance(frame["loss_plot"], pd.DataFrame)]
    assert all(len(set(frame["series"])) == 3 for frame in plotted)
    assert app.coordinator.running is None


@pytest.mark.slow
def test_train_stop_keeps_last_epoch(app, tmp_path):
    data = make_dataset(tmp_path / "data", images_per_class=12)
    request = FakeRequest(session="stopper")
    generator = _train(app, data, request, epochs=30)
    stop_answer = None
    final = None
    for frame in generator:
        outputs = _outputs(frame)
        final = outputs
        # The log has the start line, then one line per completed epoch.
        if stop_answer is None and outputs["log"].count("\n") >= 1:
            stop_answer = app.stop(request)

    assert stop_answer == message("stop_requested", "en")
    assert "stopped" in final["status"]
    assert "last completed epoch" in final["status"]
    run_dir = Path(final["run_folder"])
    history = (run_dir / "history.json").read_text()
    assert '"epoch": 1' in history
    assert '"epoch": 30' not in history
    assert app.coordinator.running is None


def test_stop_without_training(app):
    assert app.stop(KO) == message("stop_nothing", "ko")


def test_second_session_waits_and_can_leave(app, tmp_path, monkeypatch):
    monkeypatch.setattr(handlers_module, "WAIT_POLL_S", 0.05)
    data = make_dataset(tmp_path / "data", images_per_class=2)
    other = TrainingJob("someone-else", config=None)
    assert app.coordinator.register(other)
    assert app.coordinator.try_activate(other)

    request = FakeRequest("ko", session="second")
    statuses = []
    for frame in _train(app, data, request):
        statuses.append(_outputs(frame)["status"])
        if len(statuses) == 4:
            assert app.stop(request) == message("stop_requested", "ko")

    assert any("다른 학습이 진행 중" in status for status in statuses)
    assert statuses[-1] == message("train_stopped_waiting", "ko")
    assert app.coordinator.running is other


def test_same_session_cannot_start_twice(app, tmp_path):
    data = make_dataset(tmp_path / "data", images_per_class=2)
    busy = TrainingJob("session-a", config=None)
    assert app.coordinator.register(busy)
    status = _outputs(list(_train(app, data, EN))[-1])["status"]
    assert status == message("train_already_running", "en")


def test_failed_training_is_reported(app, tmp_path, monkeypatch):
    import dogbreeds.trainer

    def broken_fit(config, on_event=None, should_stop=None):
        raise RuntimeError("out of memory while building the cache")

    monkeypatch.setattr(dogbreeds.trainer, "fit", broken_fit)
    data = make_dataset(tmp_path / "data", images_per_class=2)
    final = _outputs(list(_train(app, data, KO))[-1])
    assert final["status"].startswith("학습에 실패했습니다")
    assert "out of memory" in final["status"]
    assert app.coordinator.running is None


def test_train_updates_are_throttled(app, tmp_path, monkeypatch):
    import dogbreeds.trainer
    from dogbreeds.trainer import FitResult, TrainEvent

    def fast_fit(config, on_event=None, should_stop=None):
        on_event(TrainEvent("start", 1, 2, num_batches=50, message="split", run_dir=tmp_path / "run"))
        for epoch in (1, 2):
            for batch in range(1, 51):
                time.sleep(0.02)
                on_event(TrainEvent("batch", epoch, 2, batch=batch, num_batches=50, loss=2.0 / epoch))
            metrics = {"epoch": epoch, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.1, "val_top1": 0.4,
                       "val_top5": 0.9}
            on_event(TrainEvent("epoch", epoch, 2, metrics=metrics, message=f"epoch {epoch}/2"))
        on_event(TrainEvent("end", 2, 2, message="finished"))
        return FitResult(tmp_path / "run", [{}, {}], {}, stopped=False, early_stopped=False)

    monkeypatch.setattr(dogbreeds.trainer, "fit", fast_fit)
    data = make_dataset(tmp_path / "data", images_per_class=2)

    stamps = []
    for frame in _train(app, data, epochs=2):
        stamps.append((time.monotonic(), _outputs(frame)))

    plotted = [stamp for stamp, outputs in stamps[:-1] if isinstance(outputs["loss_plot"], pd.DataFrame)]
    gaps = [later - earlier for earlier, later in zip(plotted, plotted[1:])]
    assert plotted, "no plot frame during a 2 s run"
    assert all(gap >= 0.9 for gap in gaps), gaps
    texts = [stamp for stamp, _ in stamps]
    duration = texts[-1] - texts[0]
    assert len(texts) <= duration / 0.25 + 6
    final = stamps[-1][1]
    assert "finished after 2 epochs" in final["status"]
    # The final frame skips the plot when the last plotted frame already had every point.
    last_plot = [outputs["loss_plot"] for _, outputs in stamps if isinstance(outputs["loss_plot"], pd.DataFrame)][-1]
    batch_points = last_plot[last_plot["series"] == "batch loss (smoothed)"]
    assert batch_points["value"].notna().sum() == 100


# --- live curves -------------------------------------------------------------------------------------------------


def test_live_curves_recover_interval_loss():
    curves = LiveCurves()
    curves.add_batch(1, 5, 10, 2.0)     # batches 1-5 average 2.0
    curves.add_batch(1, 10, 10, 1.5)    # batches 6-10 average (1.5 * 10 - 2.0 * 5) / 5 = 1.0
    assert curves.batch_points[0] == (0.5, 2.0)
    x, smoothed = curves.batch_points[1]
    assert x == 1.0
    assert smoothed == pytest.approx(2.0 + 0.3 * (1.0 - 2.0))
    curves.add_batch(2, 5, 10, 0.8)     # a new epoch restarts the running mean
    assert curves.batch_points[2][0] == 1.5
    assert curves.batch_points[2][1] == pytest.approx(smoothed + 0.3 * (0.8 - smoothed))


def test_live_curves_first_frame_names_every_series():
    names = handlers_module.series_names("ko")
    frame = LiveCurves().loss_frame(names)
    assert list(frame["series"]) == ["학습 손실", "검증 손실", "배치 손실 (평활)"]
    assert frame["value"].isna().all()


def test_live_curves_stay_small():
    curves = LiveCurves()
    for epoch in range(1, 200):
        for batch in range(5, 101, 5):
            curves.add_batch(epoch, batch, 100, 1.0)
    assert len(curves.batch_points) <= 1500
    xs = [x for x, _ in curves.batch_points]
    assert xs == sorted(xs)


# --- compare -------------------------------------------------------------------------------------------------------


def test_compare_without_photo(app_with_runs):
    cnn, cnn_info, fcn, fcn_info, note = app_with_runs.compare(None, None, None, EN)
    assert cnn is None
    assert fcn is None
    assert note == message("compare_no_image", "en")


def test_compare_unreadable_file(app_with_runs, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"this is not an image at all")
    note = app_with_runs.compare(str(path), None, None, EN)[4]
    assert note == message("compare_unreadable", "en")


def test_compare_truncated_jpeg(app_with_runs, tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(buffer, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[:200])
    note = app_with_runs.compare(str(path), None, None, EN)[4]
    assert note == message("compare_unreadable", "en")


def test_compare_heic(app_with_runs, tmp_path):
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(HEIC_BYTES)
    note = app_with_runs.compare(str(path), None, None, KO)[4]
    assert note == message("compare_heic", "ko")


def test_compare_too_many_bytes(tmp_path, runs):
    app = AppHandlers(app_settings(tmp_path, max_upload_bytes=1_000))
    path = _photo(tmp_path / "big.png", size=(300, 300), format="PNG")
    Image.effect_noise((300, 300), 80).convert("RGB").save(path)
    note = app.compare(str(path), None, None, EN)[4]
    assert note.startswith("The photo is")
    assert "the limit is 0.001 MB" in note


def test_compare_too_many_pixels(tmp_path):
    app = AppHandlers(app_settings(tmp_path, max_image_pixels=10_000))
    path = _photo(tmp_path / "wide.png", size=(400, 300), format="PNG")
    note = app.compare(str(path), None, None, EN)[4]
    assert "400 x 300 = 0.12 megapixels" in note
    assert "the limit is 0.01 megapixels" in note


def test_compare_without_checkpoints(app, tmp_path):
    path = _photo(tmp_path / "dog.jpg")
    cnn, cnn_info, fcn, fcn_info, note = app.compare(str(path), None, None, EN)
    assert cnn is None
    assert fcn is None
    assert message("compare_no_cnn_run", "en") in note
    assert message("compare_no_fcn_run", "en") in note
    assert "python -m dogbreeds.train" in note


def test_compare_both_models(app_with_runs, tmp_path):
    cnn_choices, fcn_choices = app_with_runs.run_choices(None, None, EN)
    assert len(cnn_choices["choices"]) == 1
    assert len(fcn_choices["choices"]) == 1
    path = _photo(tmp_path / "dog.jpg")

    cnn, cnn_info, fcn, fcn_info, note = app_with_runs.compare(
        str(path), cnn_choices["value"], fcn_choices["value"], EN
    )

    assert note == ""
    assert set(cnn) <= {"Chihuahua", "Maltese dog", "beagle"}
    assert len(cnn) == 3
    assert sum(cnn.values()) == pytest.approx(1.0, abs=1e-4)
    assert len(fcn) == 3
    assert cnn_info.startswith("**custom_cnn** (CNN)")
    assert re.search(r"[\d,]+ parameters · [\d.]+ ms", cnn_info)
    assert fcn_info.startswith("**resfcn18** (fully-connected)")


def test_compare_picks_first_run_when_empty(app_with_runs, tmp_path):
    path = _photo(tmp_path / "dog.png", format="PNG")
    cnn, _, fcn, _, note = app_with_runs.compare(str(path), "", None, KO)
    assert cnn is not None
    assert fcn is not None
    assert note == ""


def test_compare_data_url(app_with_runs, tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (40, 80, 220)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    cnn, _, fcn, _, note = app_with_runs.compare(url, None, None, EN)
    assert note == ""
    assert cnn is not None


def test_compare_rejects_unlisted_run(app_with_runs, tmp_path, runs):
    path = _photo(tmp_path / "dog.jpg")
    # A real run folder, but outside the app's checkpoints folder: the API must not load it.
    outside = str(runs["custom_cnn"])
    cnn, _, fcn, _, note = app_with_runs.compare(str(path), outside, "/etc", EN)
    assert cnn is None
    assert fcn is None
    assert message("compare_unknown_run", "en", run=outside) in note
    assert message("compare_unknown_run", "en", run="/etc") in note


def test_compare_rejects_wrong_family(app_with_runs, tmp_path):
    path = _photo(tmp_path / "dog.jpg")
    cnn_choices, fcn_choices = app_with_runs.run_choices(None, None, EN)
    cnn, _, fcn, _, note = app_with_runs.compare(str(path), fcn_choices["value"], cnn_choices["value"], EN)
    assert cnn is None
    assert fcn is None
    assert "not in the run list" in note


def test_read_photo_bytes_cases(tmp_path):
    with pytest.raises(PhotoRejected) as caught:
        read_photo_bytes("", 100)
    assert caught.value.key == "compare_no_image"
    with pytest.raises(PhotoRejected) as caught:
        read_photo_bytes(str(tmp_path / "vanished.jpg"), 100)
    assert caught.value.key == "compare_no_image"
    with pytest.raises(PhotoRejected) as caught:
        read_photo_bytes(b"", 100)
    assert caught.value.key == "compare_unreadable"
    with pytest.raises(PhotoRejected) as caught:
        read_photo_bytes("data:image/png,notbase64", 100)
    assert caught.value.key == "compare_unreadable"


def test_heif_detection():
    assert is_heif(HEIC_BYTES[:16])
    assert not is_heif(b"\xff\xd8\xff\xe0" + b"\x00" * 12)
    with pytest.raises(PhotoRejected) as caught:
        decode_photo(HEIC_BYTES, 1_000_000)
    assert caught.value.key == "compare_heic"


def test_predictor_cache_reuses_and_reloads(runs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["custom_cnn"], run_dir)
    cache = PredictorCache(capacity=1)

    first = cache.get(run_dir)
    assert cache.get(run_dir) is first

    weights = run_dir / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    reloaded = cache.get(run_dir)
    assert reloaded is not first
    assert len(cache) == 1

    cache.get(runs["resfcn18"])
    assert len(cache) == 1
    assert cache.get(run_dir) is not reloaded


# --- Hub -----------------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_hub():
    server = FakeHub().start()
    yield server
    server.stop()


@pytest.fixture
def hub_app(tmp_path, fake_hub) -> AppHandlers:
    return AppHandlers(
        app_settings(tmp_path), hub_options={"endpoint": fake_hub.endpoint, "cache_dir": tmp_path / "hf-cache"}
    )


def test_load_hub_adds_run_to_picker(hub_app, fake_hub, runs, tmp_path):
    fake_hub.add("alice/dogs-fcn", run_files(runs["resfcn18"]))

    text, cnn_update, fcn_update = hub_app.load_hub("alice/dogs-fcn", "", "", EN)

    assert text.startswith("Loaded `alice/dogs-fcn` (resfcn18, commit ")
    assert cnn_update["choices"] == []
    labels = [label for label, _ in fcn_update["choices"]]
    assert labels == [f"Hub: alice/dogs-fcn · resfcn18 · top-1 {handlers_module.format_percent(_top1(runs))}"]
    assert fcn_update["value"] == fcn_update["choices"][0][1]
    path = _photo(tmp_path / "dog.jpg")
    _, _, fcn, fcn_info, note = hub_app.compare(str(path), None, fcn_update["value"], EN)
    assert fcn is not None
    assert "resfcn18" in fcn_info
    assert message("compare_no_cnn_run", "en") in note
    table = hub_app.results(EN)[1]
    assert list(table.iloc[:, 0]) == ["hub:alice/dogs-fcn"]


def _top1(runs):
    import json

    return json.loads((runs["resfcn18"] / "config.json").read_text())["metrics"]["best_top1"]


@pytest.mark.parametrize(
    ("repo", "revision", "subfolder", "key", "values"),
    [
        ("not a repo", "", "", "hub_invalid_repo_id", {"repo": "not a repo"}),
        ("", "", "", "hub_invalid_repo_id", {"repo": "?"}),
        ("alice/missing", "", "", "hub_repo_not_found", {"repo": "alice/missing"}),
        ("alice/dogs-cnn", "v9", "", "hub_revision_not_found", {"repo": "alice/dogs-cnn", "revision": "v9"}),
        ("alice/dogs-cnn", "", "nested", "hub_file_not_found",
         {"repo": "alice/dogs-cnn", "revision": "main", "file": "nested/config.json"}),
    ],
)
def test_load_hub_errors(hub_app, fake_hub, runs, repo, revision, subfolder, key, values):
    fake_hub.add("alice/dogs-cnn", run_files(runs["custom_cnn"]))
    text, cnn_update, fcn_update = hub_app.load_hub(repo, revision, subfolder, KO)
    assert text == message(key, "ko", **values)
    # A failed load leaves both pickers as they are.
    assert cnn_update == {"__type__": "update"}
    assert fcn_update == {"__type__": "update"}


def test_load_hub_error_texts_differ(hub_app, fake_hub, runs):
    fake_hub.add("alice/dogs-cnn", run_files(runs["custom_cnn"]))
    texts = {
        hub_app.load_hub("alice/missing", None, None, EN)[0],
        hub_app.load_hub("alice/dogs-cnn", "v9", None, EN)[0],
        hub_app.load_hub("alice/dogs-cnn", None, "nested", EN)[0],
    }
    assert len(texts) == 3


def test_load_hub_offline(hub_app, fake_hub, runs):
    fake_hub.add("alice/dogs-cnn", run_files(runs["custom_cnn"]))
    assert hub_app.load_hub("alice/dogs-cnn", None, None, EN)[0].startswith("Loaded")
    fake_hub.stop()

    warm = hub_app.load_hub("alice/dogs-cnn", None, None, EN)[0]
    cold = hub_app.load_hub("alice/never-loaded", None, None, EN)[0]

    assert warm.startswith("Loaded `alice/dogs-cnn`")
    assert cold == message("hub_offline", "en", repo="alice/never-loaded")


def test_hub_error_text_for_every_kind():
    from dogbreeds.hub import ERROR_KINDS, HubError

    for kind in ERROR_KINDS:
        error = HubError(kind, "english", repo_id="alice/x", revision="v1", filename="config.json", detail="503")
        for language in ("en", "ko"):
            assert "alice/x" in hub_error_text(error, language)


def test_preload_hub_runs(hub_app, fake_hub, runs):
    fake_hub.add("alice/dogs-cnn", run_files(runs["custom_cnn"]))
    lines = hub_app.preload_hub_runs("alice/dogs-cnn, alice/missing")
    assert lines[0].startswith("Loaded `alice/dogs-cnn`")
    assert "not found" in lines[1]
    assert [run.summary.architecture for run in hub_app.registry.runs()] == ["custom_cnn"]
    assert hub_app.preload_hub_runs("") == []
    assert "owner" in hub_app.preload_hub_runs("justaname")[0]


# --- results -------------------------------------------------------------------------------------------------------


def test_results_without_runs(app):
    text, table, loss, top1 = app.results(KO)
    assert text == message("results_none", "ko")
    assert table.empty
    assert loss["value"].empty


def test_results_lists_runs(app_with_runs):
    text, table, loss, top1 = app_with_runs.results(EN)
    assert text == "2 runs found."
    assert sorted(table["architecture"]) == ["custom_cnn", "resfcn18"]
    assert list(table.columns) == ["run", "architecture", "family", "parameters", "best top-1", "top-5", "epochs",
                                   "training time", "ImageNet start"]
    assert set(loss["value"]["series"]) == set(table["run"])
    assert set(loss["color_map"]) == set(table["run"])
    assert top1["value"]["value"].between(0, 100).all()


def test_results_korean_headers(app_with_runs):
    _, table, loss, top1 = app_with_runs.results(KO)
    assert "모델 구조" in table.columns
    assert loss["x_title"] == "에포크"
    assert loss["y_title"] == "손실"
    assert top1["y_title"] == "정확도 (%)"
    assert top1["color_title"] == "실행"


def test_plot_titles_follow_language(app):
    loss, accuracy = app.plot_titles(KO)
    assert loss["y_title"] == "손실"
    assert accuracy["y_title"] == "정확도 (%)"
    assert accuracy["color_title"] == "곡선"
    assert app.plot_titles(EN)[0]["x_title"] == "epoch"


def test_threads_left_behind(app):
    # Handlers start no thread unless a training or download runs.
    names = [thread.name for thread in threading.enumerate()]
    assert not any(name.startswith("dogbreeds-") for name in names)
