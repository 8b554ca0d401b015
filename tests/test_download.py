"""Tests for the Stanford Dogs download: resume, size checks and safe extraction, against a local HTTP server."""

from __future__ import annotations

import http.server
import io
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import imagegen
import pytest
from _data_a_helpers import write_split_lists

from dogbreeds.download import (
    DownloadError,
    UnsafeArchiveError,
    download_file,
    download_stanford_dogs,
    extract_tar,
    main,
)
from dogbreeds.folders import scan_image_folder

CHIHUAHUA = "n02085620-Chihuahua"
MALTESE = "n02085936-Maltese_dog"


@dataclass
class FakeServer:
    """Behaviour switches and request log of the local test server."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    honour_range: bool = True
    cut_after: int | None = None  # send only this many body bytes, then close the connection
    announced_total: int | None = None  # Content-Range total to claim instead of the real size
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range header)


def _make_handler(server: FakeServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._respond(send_body=False)

        def do_GET(self) -> None:
            self._respond(send_body=True)

        def _respond(self, send_body: bool) -> None:
            range_header = self.headers.get("Range")
            server.requests.append((self.command, self.path, range_header))
            data = server.files.get(self.path.lstrip("/"))
            if data is None:
                self.send_error(404, "Not Found")
                return

            start = 0
            status = 200
            if range_header and server.honour_range and send_body:
                start = int(range_header.removeprefix("bytes=").rstrip("-"))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            body = data[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                total = server.announced_total or len(data)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{total}")
            self.end_headers()
            if not send_body:
                return
            if server.cut_after is not None:
                self.wfile.write(body[: server.cut_after])
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server() -> Iterator[FakeServer]:
    state = FakeServer()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _tar_bytes(entries: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> bytes:
    """Build an uncompressed tar in memory; `links` maps a member name to (tar type, link target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


def _stanford_archives(tmp_path: Path) -> dict[str, bytes]:
    """Return small images.tar and lists.tar with the layout of the official archives."""
    photos = tmp_path / "source"
    imagegen.make_class_tree(photos, {CHIHUAHUA: 2, MALTESE: 2})
    entries = {
        f"Images/{path.relative_to(photos).as_posix()}": path.read_bytes()
        for path in sorted(photos.rglob("*.jpg"))
    }
    lists = write_split_lists(
        tmp_path / "lists_source",
        [f"{CHIHUAHUA}/n02085620_0.jpg", f"{MALTESE}/n02085936_0.jpg"],
        [f"{CHIHUAHUA}/n02085620_1.jpg", f"{MALTESE}/n02085936_1.jpg"],
    )
    list_entries = {name: (lists / name).read_bytes() for name in ("train_list.mat", "test_list.mat")}
    return {"images.tar": _tar_bytes(entries), "lists.tar": _tar_bytes(list_entries)}


def test_download_extracts_stanford_layout(tmp_path: Path, server: FakeServer) -> None:
    server.files = _stanford_archives(tmp_path)
    dest = tmp_path / "images"
    calls: list[tuple[str, int, int | None]] = []

    root = download_stanford_dogs(dest, base_url=server.url, progress=lambda *call: calls.append(call))

    assert root == dest / "Images"
    assert sorted(path.name for path in (root / CHIHUAHUA).iterdir()) == ["n02085620_0.jpg", "n02085620_1.jpg"]
    assert (dest / "lists" / "train_list.mat").is_file()
    assert (dest / "lists" / "test_list.mat").is_file()
    assert not (dest / "images.tar").exists()
    assert not (dest / "images.tar.part").exists()
    size = len(server.files["images.tar"])
    assert ("images.tar", size, size) in calls
    assert calls[-1][0] == "extracting lists.tar"
    assert scan_image_folder(dest).root == root


def test_rerun_skips_finished_steps(tmp_path: Path, server: FakeServer) -> None:
    server.files = _stanford_archives(tmp_path)
    dest = tmp_path / "images"
    download_stanford_dogs(dest, base_url=server.url)
    server.requests.clear()

    root = download_stanford_dogs(dest, base_url=server.url)

    assert root == dest / "Images"
    assert server.requests == []


def test_keep_archives(tmp_path: Path, server: FakeServer) -> None:
    server.files = _stanford_archives(tmp_path)

    download_stanford_dogs(tmp_path / "d", base_url=server.url.rstrip("/"), keep_archives=True)

    assert (tmp_path / "d" / "images.tar").read_bytes() == server.files["images.tar"]


def test_resume_from_part_file(tmp_path: Path, server: FakeServer) -> None:
    data = bytes(range(256)) * 40
    server.files = {"big.bin": data}
    (tmp_path / "big.bin.part").write_bytes(data[:4000])

    path = download_file(server.url + "big.bin", tmp_path / "big.bin")

    assert path.read_bytes() == data
    assert server.requests == [("GET", "/big.bin", "bytes=4000-")]
    assert not (tmp_path / "big.bin.part").exists()


def test_resume_after_interrupted_transfer(tmp_path: Path, server: FakeServer) -> None:
    data = bytes(range(256)) * 40
    server.files = {"big.bin": data}
    server.cut_after = 3000

    with pytest.raises(DownloadError, match="Run the same command again to resume"):
        download_file(server.url + "big.bin", tmp_path / "big.bin")
    assert (tmp_path / "big.bin.part").read_bytes() == data[:3000]
    assert not (tmp_path / "big.bin").exists()

    server.cut_after = None
    path = download_file(server.url + "big.bin", tmp_path / "big.bin")

    assert path.read_bytes() == data
    assert server.requests[-1] == ("GET", "/big.bin", "bytes=3000-")


def test_server_ignoring_range_restarts(tmp_path: Path, server: FakeServer) -> None:
    data = b"0123456789" * 100
    server.files = {"big.bin": data}
    server.honour_range = False
    (tmp_path / "big.bin.part").write_bytes(b"stale bytes")

    path = download_file(server.url + "big.bin", tmp_path / "big.bin")

    assert path.read_bytes() == data


def test_size_mismatch_raises(tmp_path: Path, server: FakeServer) -> None:
    data = b"x" * 1000
    server.files = {"big.bin": data}
    server.announced_total = 5000
    (tmp_path / "big.bin.part").write_bytes(data[:500])

    with pytest.raises(DownloadError, match="stopped at 1,000 of 5,000 bytes"):
        download_file(server.url + "big.bin", tmp_path / "big.bin")
    assert not (tmp_path / "big.bin").exists()


def test_complete_part_file_is_finished(tmp_path: Path, server: FakeServer) -> None:
    data = b"y" * 700
    server.files = {"big.bin": data}
    (tmp_path / "big.bin.part").write_bytes(data)

    path = download_file(server.url + "big.bin", tmp_path / "big.bin")

    assert path.read_bytes() == data


def test_oversized_part_file_restarts(tmp_path: Path, server: FakeServer) -> None:
    data = b"z" * 700
    server.files = {"big.bin": data}
    (tmp_path / "big.bin.part").write_bytes(b"z" * 900)

    path = download_file(server.url + "big.bin", tmp_path / "big.bin")

    assert path.read_bytes() == data


def test_existing_archive_reused_when_size_matches(tmp_path: Path, server: FakeServer) -> None:
    data = b"w" * 300
    server.files = {"big.bin": data}
    (tmp_path / "big.bin").write_bytes(data)

    download_file(server.url + "big.bin", tmp_path / "big.bin")

    assert [method for method, _, _ in server.requests] == ["HEAD"]


def test_short_existing_archive_resumed(tmp_path: Path, server: FakeServer) -> None:
    data = b"v" * 300
    server.files = {"big.bin": data}
    (tmp_path / "big.bin").write_bytes(data[:100])

    path = download_file(server.url + "big.bin", tmp_path / "big.bin")

    assert path.read_bytes() == data
    assert server.requests[-1] == ("GET", "/big.bin", "bytes=100-")


def test_missing_file_raises_http_error(tmp_path: Path, server: FakeServer) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(server.url + "nope.tar", tmp_path / "nope.tar")


def test_failed_download_removes_new_empty_dest(tmp_path: Path, server: FakeServer) -> None:
    dest = tmp_path / "new" / "images"
    with pytest.raises(DownloadError):
        download_stanford_dogs(dest, base_url=server.url + "missing/")
    assert not dest.exists()


def test_failed_download_keeps_existing_dest(tmp_path: Path, server: FakeServer) -> None:
    dest = tmp_path / "images"
    dest.mkdir()
    with pytest.raises(DownloadError):
        download_stanford_dogs(dest, base_url=server.url + "missing/")
    assert dest.is_dir()


@pytest.mark.parametrize(
    ("entries", "links", "bad_member"),
    [
        ({"Images/a.jpg": b"a", "../evil.txt": b"evil"}, None, "../evil.txt"),
        ({"Images/../../evil.txt": b"evil"}, None, "Images/../../evil.txt"),
        ({"/tmp/evil.txt": b"evil"}, None, "/tmp/evil.txt"),
        ({"Images/a.jpg": b"a"}, {"Images/link": (tarfile.SYMTYPE, "/etc/passwd")}, "Images/link"),
        ({"Images/a.jpg": b"a"}, {"Images/hard": (tarfile.LNKTYPE, "Images/a.jpg")}, "Images/hard"),
        ({"Images/a.jpg": b"a"}, {"Images/fifo": (tarfile.FIFOTYPE, "")}, "Images/fifo"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "fifo"],
)
def test_hostile_tar_rejected(tmp_path: Path, entries: dict, links: dict | None, bad_member: str) -> None:
    archive = tmp_path / "evil.tar"
    archive.write_bytes(_tar_bytes(entries, links))
    dest = tmp_path / "out" / "dest"

    with pytest.raises(UnsafeArchiveError) as caught:
        extract_tar(archive, dest)

    assert bad_member in str(caught.value)
    assert "nothing was extracted" in str(caught.value).lower()
    assert list(dest.rglob("*")) == []
    assert not (tmp_path / "out" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_hostile_download_rejected(tmp_path: Path, server: FakeServer) -> None:
    server.files = {"images.tar": _tar_bytes({"../escaped.jpg": b"x"}), "lists.tar": _tar_bytes({})}

    with pytest.raises(UnsafeArchiveError, match="escaped.jpg"):
        download_stanford_dogs(tmp_path / "dest", base_url=server.url)
    assert not (tmp_path / "escaped.jpg").exists()


def test_damaged_archive_raises(tmp_path: Path) -> None:
    archive = tmp_path / "images.tar"
    archive.write_bytes(b"not a tar archive at all" * 40)

    with pytest.raises(DownloadError, match="damaged"):
        extract_tar(archive, tmp_path / "out")


def test_archive_without_images_folder(tmp_path: Path, server: FakeServer) -> None:
    server.files = {"images.tar": _tar_bytes({"photos/a.jpg": b"a"}), "lists.tar": _tar_bytes({})}

    with pytest.raises(ValueError, match="did not contain an 'Images/' folder"):
        download_stanford_dogs(tmp_path / "dest", base_url=server.url)


def test_cli_prints_folder(tmp_path: Path, server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    server.files = _stanford_archives(tmp_path)
    dest = tmp_path / "images"

    status = main(["--dest", str(dest), "--base-url", server.url])

    output = capsys.readouterr().out
    assert status == 0
    assert f"Folder to train on: {dest / 'Images'}" in output
    assert f"--train_dir {dest / 'Images'}" in output
    assert f"--split_lists {dest / 'lists'}" in output


def test_cli_error_exit_status(tmp_path: Path, server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--dest", str(tmp_path / "images"), "--base-url", server.url])

    assert status == 1
    assert "HTTP 404" in capsys.readouterr().err


def test_data_module_command_line(tmp_path: Path, server: FakeServer) -> None:
    server.files = _stanford_archives(tmp_path)
    dest = tmp_path / "images"
    repository = Path(__file__).resolve().parents[1]

    result = subprocess.run(
        [sys.executable, "-m", "dogbreeds.data", "download", "--dest", str(dest), "--base-url", server.url],
        cwd=repository, capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert f"Folder to train on: {dest / 'Images'}" in result.stdout
    assert (dest / "Images" / MALTESE / "n02085936_1.jpg").is_file()
