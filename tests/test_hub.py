"""Tests of dogbreeds.hub against FakeHub, a Hub-like server on 127.0.0.1, and a mocked HfApi for pushes."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from _app_helpers import FakeHub, run_files, trained_runs

from dogbreeds import hub
from dogbreeds.hub import HubError, build_model_card, download_run, parse_repo_spec, push_run
from dogbreeds.predict import Predictor


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return trained_runs(tmp_path_factory.mktemp("app-runs"))


@pytest.fixture
def fake_hub():
    server = FakeHub().start()
    yield server
    server.stop()


def _download(fake_hub: FakeHub, tmp_path: Path, repo_id: str, **kwargs) -> hub.HubRun:
    return download_run(repo_id, endpoint=fake_hub.endpoint, cache_dir=tmp_path / "hf-cache", **kwargs)


def _kind(fake_hub: FakeHub, tmp_path: Path, repo_id: str, **kwargs) -> HubError:
    with pytest.raises(HubError) as caught:
        _download(fake_hub, tmp_path, repo_id, **kwargs)
    return caught.value


def test_download_run_loads_predictor(fake_hub, tmp_path, runs):
    commit = fake_hub.add("alice/dogs-cnn", run_files(runs["custom_cnn"]))

    loaded = _download(fake_hub, tmp_path, "alice/dogs-cnn")

    assert (loaded.run_dir / "config.json").is_file()
    assert (loaded.run_dir / "model.safetensors").is_file()
    assert (loaded.run_dir / "history.json").is_file()
    assert loaded.commit == commit
    assert loaded.label == "alice/dogs-cnn"
    assert str(loaded.run_dir).startswith(str(tmp_path / "hf-cache"))
    predictor = Predictor.from_run(loaded.run_dir)
    top = predictor.predict(runs["data"] / "n02088364-beagle" / "n02088364_0.jpg", k=3)
    assert len(top) == 3


def test_download_run_subfolder_and_revision(fake_hub, tmp_path, runs):
    files = {f"fcn/{name}": data for name, data in run_files(runs["resfcn18"]).items()}
    fake_hub.add("alice/dogs", files, revision="v1")

    loaded = _download(fake_hub, tmp_path, "alice/dogs", revision="v1", subfolder="/fcn/")

    assert loaded.subfolder == "fcn"
    assert loaded.revision == "v1"
    assert loaded.run_dir.name == "fcn"
    assert loaded.label == "alice/dogs/fcn@v1"
    assert Predictor.from_run(loaded.run_dir).family == "fcn"


def test_missing_optional_files_are_skipped(fake_hub, tmp_path, runs):
    fake_hub.add("alice/bare", run_files(runs["custom_cnn"], ("config.json", "model.safetensors")))

    loaded = _download(fake_hub, tmp_path, "alice/bare")

    assert not (loaded.run_dir / "history.json").exists()
    assert (loaded.run_dir / "model.safetensors").is_file()


def test_repo_not_found(fake_hub, tmp_path):
    error = _kind(fake_hub, tmp_path, "alice/missing")
    assert error.kind == "repo_not_found"
    assert "alice/missing" in str(error)


def test_revision_not_found(fake_hub, tmp_path, runs):
    fake_hub.add("alice/dogs-cnn", run_files(runs["custom_cnn"]))
    error = _kind(fake_hub, tmp_path, "alice/dogs-cnn", revision="no-such-branch")
    assert error.kind == "revision_not_found"
    assert error.revision == "no-such-branch"
    assert "no-such-branch" in str(error)


def test_file_not_found(fake_hub, tmp_path, runs):
    fake_hub.add("alice/half", run_files(runs["custom_cnn"], ("config.json",)))
    error = _kind(fake_hub, tmp_path, "alice/half")
    assert error.kind == "file_not_found"
    assert error.filename == "model.safetensors"


def test_file_not_found_in_subfolder(fake_hub, tmp_path, runs):
    fake_hub.add("alice/dogs-cnn", run_files(runs["custom_cnn"]))
    error = _kind(fake_hub, tmp_path, "alice/dogs-cnn", subfolder="nested")
    assert error.kind == "file_not_found"
    assert error.filename == "nested/config.json"


@pytest.mark.parametrize("repo_id", ["", "   ", "not a repo", "alice/b--c", "a/b/c", "alice/dogs.git"])
def test_invalid_repo_id_sends_nothing(fake_hub, tmp_path, repo_id):
    error = _kind(fake_hub, tmp_path, repo_id)
    assert error.kind == "invalid_repo_id"
    assert fake_hub.requests == []


def test_not_a_dogbreeds_run(fake_hub, tmp_path):
    fake_hub.add("alice/other", {"config.json": b'{"model_type": "bert"}', "model.safetensors": b"x" * 16})
    error = _kind(fake_hub, tmp_path, "alice/other")
    assert error.kind == "invalid_run"
    assert "alice/other" in str(error)


def test_server_error_without_cache(fake_hub, tmp_path, monkeypatch):
    fake_hub.add("alice/dogs-cnn", {"config.json": b"{}"})

    def answer_500(handler, send_body):
        fake_hub.requests.append((handler.command, handler.path))
        handler.send_response(500)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    monkeypatch.setattr(fake_hub, "_answer", answer_500)
    error = _kind(fake_hub, tmp_path, "alice/dogs-cnn")
    assert error.kind == "server_error"
    assert error.detail == "500"


def test_offline_with_warm_cache(fake_hub, tmp_path, runs):
    fake_hub.add("alice/dogs-cnn", run_files(runs["custom_cnn"]))
    first = _download(fake_hub, tmp_path, "alice/dogs-cnn")
    fake_hub.stop()

    started = time.monotonic()
    again = _download(fake_hub, tmp_path, "alice/dogs-cnn")
    elapsed = time.monotonic() - started

    assert again.run_dir == first.run_dir
    assert (again.run_dir / "model.safetensors").read_bytes() == (runs["custom_cnn"] / "model.safetensors").read_bytes()
    # A refused connection falls back to the cache at once; the bound only catches retry loops.
    assert elapsed < 15


def test_local_files_only_uses_cache_without_requests(fake_hub, tmp_path, runs):
    fake_hub.add("alice/dogs-cnn", run_files(runs["custom_cnn"]))
    first = _download(fake_hub, tmp_path, "alice/dogs-cnn")
    fake_hub.requests.clear()

    again = _download(fake_hub, tmp_path, "alice/dogs-cnn", local_files_only=True)

    assert again.run_dir == first.run_dir
    assert fake_hub.requests == []


def test_offline_with_cold_cache(fake_hub, tmp_path):
    fake_hub.stop()
    started = time.monotonic()
    error = _kind(fake_hub, tmp_path, "alice/never-loaded")
    # One HEAD without retries decides; hf_hub_download alone retries a refused connection for about 20 s.
    assert time.monotonic() - started < 10
    assert error.kind == "offline"
    assert "alice/never-loaded" in str(error)


def test_not_cached_when_downloads_are_off(fake_hub, tmp_path):
    error = _kind(fake_hub, tmp_path, "alice/never-loaded", local_files_only=True)
    assert error.kind == "not_cached"
    assert fake_hub.requests == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("alice/dogs", ("alice/dogs", None, None)),
        ("alice/dogs@v1", ("alice/dogs", "v1", None)),
        ("alice/dogs/cnn/best@main", ("alice/dogs", "main", "cnn/best")),
        (" alice/dogs/ ", ("alice/dogs", None, None)),
    ],
)
def test_parse_repo_spec(spec, expected):
    assert parse_repo_spec(spec) == expected


def test_parse_repo_spec_needs_owner():
    with pytest.raises(HubError) as caught:
        parse_repo_spec("dogs@main")
    assert caught.value.kind == "invalid_repo_id"


def test_parse_repo_specs_list():
    assert hub.parse_repo_specs("alice/a, bob/b@v2  carol/c/sub") == [
        ("alice/a", None, None),
        ("bob/b", "v2", None),
        ("carol/c", None, "sub"),
    ]


# --- push -----------------------------------------------------------------------------------------------------


class RecordingApi:
    """Stand-ins for HfApi.create_repo and HfApi.upload_folder that record the calls and the uploaded files."""

    def __init__(self) -> None:
        self.created: list[dict] = []
        self.uploads: list[dict] = []

    def create_repo(self, api_self, repo_id, **kwargs):
        self.created.append({"repo_id": repo_id, **kwargs})

    def upload_folder(self, api_self, **kwargs):
        folder = Path(kwargs["folder_path"])
        files = {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}
        self.uploads.append({**kwargs, "files": files, "endpoint": api_self.endpoint})

        class Info:
            commit_url = f"https://hub.example/{kwargs['repo_id']}/commit/abc"

        return Info()


@pytest.fixture
def recording_api(monkeypatch) -> RecordingApi:
    import huggingface_hub

    recorder = RecordingApi()
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **kw: recorder.create_repo(self, repo_id, **kw))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: recorder.upload_folder(self, **kw))
    return recorder


def test_push_uploads_run_and_card(recording_api, runs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["custom_cnn"], run_dir)

    url = push_run(run_dir, "alice/dogs-cnn", private=True, endpoint="http://127.0.0.1:9")

    assert url == "https://hub.example/alice/dogs-cnn/commit/abc"
    assert recording_api.created == [{"repo_id": "alice/dogs-cnn", "repo_type": "model", "private": True,
                                      "exist_ok": True}]
    upload = recording_api.uploads[0]
    assert upload["repo_id"] == "alice/dogs-cnn"
    assert upload["endpoint"] == "http://127.0.0.1:9"
    assert {"README.md", "config.json", "model.safetensors", "history.json"} <= set(upload["files"])
    assert "last.safetensors" not in upload["files"]
    assert "optimizer.safetensors" not in upload["files"]
    assert "trainer_state.json" not in upload["files"]
    assert upload["files"]["model.safetensors"] == (run_dir / "model.safetensors").read_bytes()
    assert "custom_cnn" in upload["files"]["README.md"].decode()


def test_push_into_subfolder_keeps_card_at_root(recording_api, runs):
    push_run(runs["resfcn18"], "alice/dogs", path_in_repo="fcn")

    files = recording_api.uploads[0]["files"]
    assert "README.md" in files
    assert "fcn/config.json" in files
    assert "fcn/model.safetensors" in files
    assert "subfolder='fcn'" in files["README.md"].decode()


def test_push_rejects_missing_run(recording_api, tmp_path):
    with pytest.raises(HubError) as caught:
        push_run(tmp_path / "nope", "alice/dogs")
    assert caught.value.kind == "invalid_run"
    assert recording_api.created == []


def test_push_rejects_folder_without_weights(recording_api, runs, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(runs["custom_cnn"] / "config.json", run_dir / "config.json")
    with pytest.raises(HubError) as caught:
        push_run(run_dir, "alice/dogs")
    assert "model.safetensors" in str(caught.value)
    assert recording_api.uploads == []


def test_push_rejects_bad_repo_id(recording_api, runs):
    with pytest.raises(HubError) as caught:
        push_run(runs["custom_cnn"], "alice/dogs--x")
    assert caught.value.kind == "invalid_repo_id"


def test_model_card_content(runs):
    config = json.loads((runs["custom_cnn"] / "config.json").read_text())
    card = build_model_card(runs["custom_cnn"], "alice/dogs-cnn")

    assert card.startswith("---\n")
    assert "pipeline_tag: image-classification" in card
    assert "# alice/dogs-cnn: custom_cnn on Stanford Dogs" in card
    assert f"| Parameters | {config['parameters']:,} |" in card
    for name in ("Chihuahua", "Maltese dog", "beagle"):
        assert name in card
    assert f"{100 * config['metrics']['best_top1']:.2f} %" in card
    assert "| ImageNet-pretrained start | no |" in card
    assert "optimistic" not in card
    assert "download_run('alice/dogs-cnn')" in card


def test_model_card_warns_for_pretrained_runs(runs, tmp_path):
    run_dir = tmp_path / "pretrained"
    shutil.copytree(runs["custom_cnn"], run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config["train_config"]["pretrained"] = True
    (run_dir / "config.json").write_text(json.dumps(config))

    card = build_model_card(run_dir, "alice/dogs-resnet")

    assert "| ImageNet-pretrained start | yes |" in card
    assert "Scores are optimistic" in card
    assert "ImageNet" in card


def test_cli_push(recording_api, runs, capsys):
    status = hub.main(["push", str(runs["custom_cnn"]), "alice/dogs-cnn", "--private"])
    assert status == 0
    assert "https://hub.example/alice/dogs-cnn/commit/abc" in capsys.readouterr().out
    assert recording_api.created[0]["private"] is True


def test_cli_push_missing_run(recording_api, tmp_path, capsys):
    status = hub.main(["push", str(tmp_path / "missing"), "alice/dogs"])
    assert status == 2
    assert "not found" in capsys.readouterr().err


def test_cli_download(fake_hub, runs, tmp_path, monkeypatch, capsys):
    fake_hub.add("alice/dogs-cnn", run_files(runs["custom_cnn"]))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cli-cache"))
    original = hub.download_run

    def with_cache(*args, **kwargs):
        return original(*args, cache_dir=tmp_path / "cli-cache", **kwargs)

    monkeypatch.setattr(hub, "download_run", with_cache)
    status = hub.main(["download", "alice/dogs-cnn", "--endpoint", fake_hub.endpoint])
    assert status == 0
    printed = Path(capsys.readouterr().out.strip())
    assert (printed / "model.safetensors").is_file()
