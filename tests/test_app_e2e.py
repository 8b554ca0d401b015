"""End-to-end tests: the app served on 127.0.0.1 in this process, driven through its API with gradio_client."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _app_helpers import FakeHub, free_port, run_files, serve_app, trained_runs
from PIL import Image

from dogbreeds.ui.handlers import TRAIN_OUTPUTS
from dogbreeds.ui.text import message

pytestmark = pytest.mark.slow

STABLE_ENDPOINTS = ("/train", "/stop", "/compare", "/load_hub", "/results")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Yield (url, handlers, hub, folder) of the app served with two trained runs and a Hub-like server."""
    runs = trained_runs(tmp_path_factory.mktemp("app-runs"))
    with serve_app(tmp_path_factory.mktemp("e2e"), runs) as server:
        yield server["url"], server["handlers"], server["hub"], server["folder"]


@pytest.fixture
def client(served):
    from gradio_client import Client

    return Client(served[0], verbose=False)


def _train_args(data_dir: Path, epochs: int) -> dict:
    return {
        "data_dir": str(data_dir), "architecture": "custom_cnn", "device": "cpu", "epochs": epochs,
        "image_size": 32, "batch_size": 4, "learning_rate": None, "pretrained": False,
    }


def _submit_train(client, data_dir: Path, epochs: int):
    args = _train_args(data_dir, epochs)
    return client.submit(*args.values(), api_name="/train")


def _named(outputs) -> dict:
    return dict(zip(TRAIN_OUTPUTS, outputs))


def _wait_for(job, condition, timeout: float = 120.0) -> dict:
    """Poll a submitted /train job until `condition(latest outputs)` holds; return those outputs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outputs = job.outputs()
        if outputs and condition(_named(outputs[-1])):
            return _named(outputs[-1])
        if job.done() and outputs:
            return _named(outputs[-1])
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout} s; last outputs: {job.outputs()[-1:]}")


def test_stable_endpoints_exist(client):
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert set(STABLE_ENDPOINTS) <= endpoints


def test_train_runs_through_api(client, served):
    _, handlers, _, folder = served
    job = _submit_train(client, folder / "images", epochs=1)
    final = _named(job.result())

    assert "finished after 1 epochs" in final["status"]
    run_dir = Path(final["run_folder"])
    assert (run_dir / "model.safetensors").is_file()
    assert run_dir.parent == folder / "checkpoints"
    assert "**Architecture:** custom_cnn" in final["summary"]


def test_train_then_stop(client, served, tmp_path):
    from gradio_client import Client, handle_file

    url, handlers, _, folder = served
    job = _submit_train(client, folder / "images", epochs=40)
    _wait_for(job, lambda outputs: outputs["log"].count("\n") >= 1)

    # Predictions keep working while the training runs.
    photo = tmp_path / "dog.jpg"
    Image.new("RGB", (64, 48), (220, 40, 40)).save(photo)
    cnn = Client(url, verbose=False).predict(handle_file(str(photo)), None, None, api_name="/compare")[0]
    assert len(cnn["confidences"]) == 3
    assert not job.done()
    assert handlers.coordinator.running is not None

    stop_answer = client.predict(api_name="/stop")
    assert stop_answer == message("stop_requested", "en")
    final = _wait_for(job, lambda outputs: "stopped" in outputs["status"], timeout=60)

    assert final["status"].startswith("Training stopped")
    history = (Path(final["run_folder"]) / "history.json").read_text()
    assert '"epoch": 40' not in history
    job.result()
    assert handlers.coordinator.running is None


def test_second_client_waits_for_running_training(served):
    from gradio_client import Client

    url, handlers, _, folder = served
    first = Client(url, verbose=False)
    second = Client(url, verbose=False)
    first_job = _submit_train(first, folder / "images", epochs=40)
    _wait_for(first_job, lambda outputs: "Epoch" in outputs["status"] or outputs["log"].count("\n") >= 1)

    second_job = _submit_train(second, folder / "images", epochs=1)
    waiting = _wait_for(second_job, lambda outputs: "Another training is running" in outputs["status"], timeout=30)
    assert "Another training is running" in waiting["status"]

    assert second.predict(api_name="/stop") == message("stop_requested", "en")
    second_final = _named(second_job.result())
    assert second_final["status"] == message("train_stopped_waiting", "en")

    first.predict(api_name="/stop")
    first_final = _named(first_job.result())
    assert first_final["status"].startswith("Training stopped")


def test_compare_through_api(client, tmp_path):
    from gradio_client import handle_file

    photo = tmp_path / "dog.jpg"
    Image.new("RGB", (64, 48), (40, 180, 60)).save(photo)

    cnn, cnn_info, fcn, fcn_info, note = client.predict(handle_file(str(photo)), None, None, api_name="/compare")

    assert note == ""
    assert len(cnn["confidences"]) == 3
    assert cnn["label"] in {"Chihuahua", "Maltese dog", "beagle"}
    assert len(fcn["confidences"]) == 3
    assert "parameters" in cnn_info
    assert "resfcn18" in fcn_info


def test_compare_rejects_heic_through_api(client, tmp_path):
    from gradio_client import handle_file

    photo = tmp_path / "IMG_0001.heic"
    photo.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)

    cnn, _, fcn, _, note = client.predict(handle_file(str(photo)), None, None, api_name="/compare")

    # An empty gr.Label reaches the client as an empty dict.
    assert not cnn
    assert not fcn
    assert note == message("compare_heic", "en")


def test_load_hub_through_api(client, served, tmp_path):
    text, cnn_update, fcn_update = client.predict("alice/dogs-fcn", "", "", api_name="/load_hub")
    assert text.startswith("Loaded `alice/dogs-fcn`")

    missing = client.predict("alice/missing", "", "", api_name="/load_hub")[0]
    assert missing == message("hub_repo_not_found", "en", repo="alice/missing")

    from gradio_client import handle_file

    photo = tmp_path / "dog.png"
    Image.new("RGB", (40, 40), (40, 80, 220)).save(photo)
    hub_run = served[1].registry.runs("fcn")[-1]
    assert hub_run.hub is not None
    _, _, fcn, fcn_info, _ = client.predict(handle_file(str(photo)), None, hub_run.value, api_name="/compare")
    assert len(fcn["confidences"]) == 3


REPO_ROOT = Path(__file__).resolve().parent.parent


def test_import_loads_and_launches_nothing(tmp_path):
    code = (
        "import os, sys, threading\n"
        "import app\n"
        "print(threading.active_count())\n"
        "print('torch' in sys.modules)\n"
        "print(os.environ['GRADIO_ANALYTICS_ENABLED'], os.environ['HF_HUB_DISABLE_TELEMETRY'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GRADIO_ANALYTICS_ENABLED": "True"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120, check=True)

    threads, torch_loaded, flags = result.stdout.split("\n")[:3]
    assert threads == "1"
    assert torch_loaded == "False"
    assert flags == "False 1"
    assert list(tmp_path.iterdir()) == []


def test_python_app_serves_and_preloads_hub(tmp_path):
    from gradio_client import Client

    runs = trained_runs(tmp_path / "runs")
    hub = FakeHub().start()
    hub.add("alice/dogs-fcn", run_files(runs["resfcn18"]))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "HF_ENDPOINT": hub.endpoint,
        "HF_HOME": str(tmp_path / "hf-home"),
        "DOGBREEDS_HUB_REPO": "alice/dogs-fcn",
    }
    log = (tmp_path / "app.log").open("w")
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "app.py")], cwd=tmp_path, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert process.poll() is None, (tmp_path / "app.log").read_text()
                assert time.monotonic() < deadline, "app.py did not serve within 180 s"
                time.sleep(0.5)

        client = Client(url, verbose=False)
        text, table, _, _ = client.predict(api_name="/results")
        assert text == "1 runs found."
        assert [row[0] for row in table["data"]] == ["hub:alice/dogs-fcn"]
        assert ("HEAD", "/alice/dogs-fcn/resolve/main/config.json") in hub.requests
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        hub.stop()
    # The data folder (./images/images) is missing, and nothing was written besides the Hub cache and the log
    # ("runs" exists only when this test trained the runs itself).
    written = {path.name for path in tmp_path.iterdir()} - {"runs"}
    assert written == {"app.log", "hf-home"}
