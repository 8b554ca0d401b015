"""Shared pieces of the hub, UI handler, end-to-end and browser tests.

- tiny class-per-folder data sets and tiny trained runs (custom_cnn and resfcn18 at 32 px, two epochs);
- FakeHub, an HTTP server on 127.0.0.1 that imitates the Hub's `resolve` endpoint;
- app settings pointing at a test's own folders.
"""

from __future__ import annotations

import hashlib
import http.server
import shutil
import socket
import threading
import urllib.parse
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import imagegen

from dogbreeds.config import TrainConfig
from dogbreeds.trainer import fit
from dogbreeds.ui.settings import AppSettings

CLASS_NAMES = ("n02085620-Chihuahua", "n02085936-Maltese_dog", "n02088364-beagle")

# Trained runs, shared by every test module of one pytest session (training costs seconds).
_RUNS: dict[str, Path] = {}


def make_dataset(root: Path, images_per_class: int = 6, size: tuple[int, int] = (40, 40)) -> Path:
    """Write `images_per_class` noisy solid-colour JPEGs per class under `root` and return `root`."""
    imagegen.make_class_tree(root, {name: images_per_class for name in CLASS_NAMES}, size=size)
    return root


def tiny_train_config(data_dir: Path, out: Path, cache_dir: Path, arch: str, **changes) -> TrainConfig:
    """Return a two-epoch CPU TrainConfig for `arch` at 32 px that writes under `out`."""
    config = TrainConfig(
        train_dir=data_dir,
        arch=arch,
        image_size=32,
        epochs=2,
        batch_size=4,
        device="cpu",
        workers=0,
        out=out,
        cache_dir=cache_dir,
    )
    return replace(config, **changes)


def trained_runs(base: Path) -> dict[str, Path]:
    """Train (once per session) a custom_cnn and a resfcn18 run on a tiny data set; return {arch: run folder}."""
    if not _RUNS:
        data_dir = make_dataset(base / "data")
        for arch in ("custom_cnn", "resfcn18"):
            config = tiny_train_config(data_dir, base / "checkpoints", base / "cache", arch)
            _RUNS[arch] = fit(config).run_dir
        _RUNS["data"] = data_dir
    return dict(_RUNS)


def app_settings(tmp_path: Path, **changes) -> AppSettings:
    """Return local (not Space) settings whose folders all live under `tmp_path`."""
    settings = AppSettings.from_env({})
    settings = replace(
        settings,
        default_data_dir=tmp_path / "images",
        checkpoints_dir=tmp_path / "checkpoints",
        cache_dir=tmp_path / "cache",
        workers=0,
    )
    return replace(settings, **changes)


class FakeHub:
    """An HTTP server on 127.0.0.1 that serves files the way the Hub's resolve endpoint does.

    `add(repo_id, files, revision="main")` publishes {path in repo: bytes}. HEAD and GET of
    /{repo_id}/resolve/{revision or commit hash}/{path} return 200 with X-Repo-Commit and a quoted ETag, or 404 with
    X-Error-Code RepoNotFound, RevisionNotFound or EntryNotFound. `requests` lists (method, path) pairs.
    """

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}
        self.commits: dict[tuple[str, str], str] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
                hub._answer(self, send_body=False)

            def do_GET(self) -> None:  # noqa: N802
                hub._answer(self, send_body=True)

            def log_message(self, format: str, *args) -> None:  # noqa: A002
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, repo_id: str, files: dict[str, bytes], revision: str = "main") -> str:
        """Publish `files` at `revision` of `repo_id` and return the revision's commit hash."""
        self.repos.setdefault(repo_id, {})[revision] = dict(files)
        commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        self.commits[(repo_id, revision)] = commit
        return commit

    def _answer(self, handler: http.server.BaseHTTPRequestHandler, send_body: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(handler.path).path)
        self.requests.append((handler.command, path))
        parts = path.lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            self._not_found(handler, None, None)
            return

        repo_id = "/".join(parts[:2])
        revision = parts[3]
        filename = "/".join(parts[4:])
        if repo_id not in self.repos:
            self._not_found(handler, "RepoNotFound", None)
            return
        # Like the Hub, a commit hash names the same files as the branch that points at it.
        for (repo, branch), commit in self.commits.items():
            if repo == repo_id and commit == revision:
                revision = branch
        if revision not in self.repos[repo_id]:
            self._not_found(handler, "RevisionNotFound", None)
            return
        commit = self.commits[(repo_id, revision)]
        data = self.repos[repo_id][revision].get(filename)
        if data is None:
            self._not_found(handler, "EntryNotFound", commit)
            return

        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("X-Repo-Commit", commit)
        handler.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        handler.end_headers()
        if send_body:
            handler.wfile.write(data)

    @staticmethod
    def _not_found(handler: http.server.BaseHTTPRequestHandler, code: str | None, commit: str | None) -> None:
        body = b'{"error": "not found"}'
        handler.send_response(404)
        if code is not None:
            handler.send_header("X-Error-Code", code)
        if commit is not None:
            handler.send_header("X-Repo-Commit", commit)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)


def run_files(run_dir: Path, names: tuple[str, ...] = ("config.json", "model.safetensors", "history.json")) -> dict:
    """Return {file name: bytes} of the named files of a run folder that exist."""
    return {name: (run_dir / name).read_bytes() for name in names if (run_dir / name).is_file()}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_app(folder: Path, runs: dict[str, Path], images_per_class: int = 12) -> Iterator[dict]:
    """Serve the app on 127.0.0.1 with copies of `runs` and a FakeHub holding the resfcn18 run as alice/dogs-fcn.

    Yields {"url", "handlers", "hub", "folder", "data"}; the server and the hub stop on exit.
    """
    import app as app_module
    from dogbreeds.ui.handlers import AppHandlers

    for arch in ("custom_cnn", "resfcn18"):
        shutil.copytree(runs[arch], folder / "checkpoints" / runs[arch].name)
    data = make_dataset(folder / "images", images_per_class=images_per_class)
    settings = replace(app_settings(folder), default_data_dir=data)

    hub = FakeHub().start()
    hub.add("alice/dogs-fcn", run_files(runs["resfcn18"]))
    handlers = AppHandlers(settings, hub_options={"endpoint": hub.endpoint, "cache_dir": folder / "hf-cache"})
    demo = app_module.build_app(settings, handlers)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **app_module.launch_options(settings))
    try:
        yield {"url": url, "handlers": handlers, "hub": hub, "folder": folder, "data": data}
    finally:
        demo.close()
        hub.stop()
