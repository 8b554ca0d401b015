"""Download and safely extract the Stanford Dogs images and official split lists.

`python -m dogbreeds.data download [--dest DIR]` fetches `images.tar` (20,580 photos of 120 breeds, an
estimated 0.75 GB) and `lists.tar` (train_list.mat / test_list.mat) from the data set's home page. An interrupted
download continues from its `.part` file with an HTTP Range request, and the received size is checked
against the server's Content-Length / Content-Range. Archives are extracted only after every member has
been checked: absolute paths, `..` components, links and device files are rejected.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from dogbreeds import __version__
from dogbreeds.folders import DataFolderError, find_class_root

logger = logging.getLogger(__name__)

STANFORD_DOGS_URL = "http://vision.stanford.edu/aditya86/ImageNetDogs/"
IMAGES_ARCHIVE = "images.tar"
LISTS_ARCHIVE = "lists.tar"
IMAGES_FOLDER = "Images"
LISTS_FOLDER = "lists"

ProgressCallback = Callable[[str, int, "int | None"], None]

_CHUNK_BYTES = 1 << 20
_TIMEOUT_SECONDS = 60
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(?P<start>\d+)-(?P<end>\d+)|\*)/(?P<total>\d+|\*)")


class DownloadError(OSError):
    """Raised when a download fails, stops early or has the wrong size; a rerun resumes it where possible."""


class UnsafeArchiveError(ValueError):
    """Raised when an archive has a member that could write outside the destination or is not a plain file."""


def download_stanford_dogs(
    dest: Path,
    *,
    base_url: str = STANFORD_DOGS_URL,
    progress: ProgressCallback | None = None,
    keep_archives: bool = False,
) -> Path:
    """Download and extract Stanford Dogs into `dest` and return the class root to train on.

    The photos land in `dest/Images/<breed>/` and the split lists in `dest/lists/`. `progress(name,
    bytes_done, bytes_total)` is called while downloading (name = archive file) and extracting (name =
    "extracting <archive>"); `bytes_total` is None when the server does not send a size. A finished step
    is remembered by a hidden marker file, so a rerun skips it. The archives are deleted after extraction
    unless `keep_archives` is true. Raises DownloadError, UnsafeArchiveError or DataFolderError.
    """
    dest = Path(dest).expanduser()
    created_dest = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    base = base_url if base_url.endswith("/") else base_url + "/"

    try:
        for archive, target in ((IMAGES_ARCHIVE, dest), (LISTS_ARCHIVE, dest / LISTS_FOLDER)):
            marker = dest / f".{archive}.extracted"
            if marker.exists():
                logger.info("Skipping %s: it was already downloaded and extracted into '%s'.", archive, target)
                continue
            archive_path = download_file(base + archive, dest / archive, progress=progress)
            extract_tar(archive_path, target, progress=progress)
            marker.write_text(f"{archive} extracted into {target}\n", encoding="utf-8")
            if not keep_archives:
                archive_path.unlink()
    except BaseException:
        # A failed first attempt (no network, say) should not leave an empty folder that looks like a data set.
        if created_dest and not any(dest.iterdir()):
            dest.rmdir()
        raise

    images = dest / IMAGES_FOLDER
    if not images.is_dir():
        raise DataFolderError(
            f"'{IMAGES_ARCHIVE}' did not contain an '{IMAGES_FOLDER}/' folder, so '{images}' is missing. "
            f"Delete '{dest / ('.' + IMAGES_ARCHIVE + '.extracted')}' and run the download again."
        )
    return find_class_root(images)


def download_file(
    url: str, path: Path, *, progress: ProgressCallback | None = None, timeout: float = _TIMEOUT_SECONDS
) -> Path:
    """Download `url` to `path`, resuming from `path.part` if it exists, and return `path`.

    The size is checked against Content-Length (status 200) or Content-Range (status 206). A file already
    at `path` is kept if the server reports the same size or cannot be reached. On failure the `.part` file
    is kept for the next attempt, except when it is inconsistent with the server's size.
    """
    path = Path(path)
    part = path.with_name(path.name + ".part")
    if path.exists() and _reuse_existing_file(url, path, part, timeout):
        return path

    for attempt in range(2):
        offset = part.stat().st_size if part.exists() else 0
        try:
            total = _fetch_to_part(url, part, offset, path.name, progress, timeout)
        except _RangeNotSatisfiable as error:
            if error.total is not None and error.total == offset:
                total = offset
            elif attempt == 0:
                logger.warning("Discarding '%s': it does not fit the server's size; downloading again.", part)
                part.unlink()
                continue
            else:
                raise DownloadError(f"Server rejected the byte range for {url} twice; try again later.") from None
        break

    received = part.stat().st_size
    if total is not None and received != total:
        raise DownloadError(
            f"Download of {url} stopped at {received:,} of {total:,} bytes. "
            f"Run the same command again to resume from '{part}'."
        )
    os.replace(part, path)
    logger.info("Downloaded %s (%s bytes) to '%s'.", url, f"{received:,}", path)
    return path


class _RangeNotSatisfiable(Exception):
    def __init__(self, total: int | None) -> None:
        super().__init__(total)
        self.total = total


def _fetch_to_part(
    url: str, part: Path, offset: int, name: str, progress: ProgressCallback | None, timeout: float
) -> int | None:
    """Append the bytes from `offset` on to `part`; return the full file size the server announced, if any."""
    headers = {"User-Agent": f"dogbreeds/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            raise _RangeNotSatisfiable(_content_range_total(error.headers.get("Content-Range"))) from None
        raise DownloadError(f"Download of {url} failed: HTTP {error.code} {error.reason}. Check the URL.") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"Cannot reach {url}: {reason}. Check the network connection and try again.") from None

    with response:
        total, mode = _response_size(response, url, offset)
        if mode == "wb":
            offset = 0
        _check_free_space(part.parent, total, offset, url)
        _copy_body(response, part, mode, offset, total, name, progress, url)
    return total


def _response_size(response: http.client.HTTPResponse, url: str, offset: int) -> tuple[int | None, str]:
    """Return the full file size the response announces and the file mode: append ("ab") or restart ("wb")."""
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch((response.headers.get("Content-Range") or "").strip())
        if match is None or match.group("start") is None or int(match.group("start")) != offset:
            raise DownloadError(
                f"Server sent an unexpected Content-Range {response.headers.get('Content-Range')!r} for {url} "
                f"(expected bytes {offset}-...). Delete the .part file and try again."
            )
        total = match.group("total")
        return (int(total) if total != "*" else None), "ab"
    if response.status == 200:
        if offset:
            logger.info("Server ignored the resume request for %s; downloading from the start.", url)
        length = response.headers.get("Content-Length")
        return (int(length) if length and length.isdigit() else None), "wb"
    raise DownloadError(f"Download of {url} failed: unexpected HTTP status {response.status}.")


def _copy_body(
    response: http.client.HTTPResponse,
    part: Path,
    mode: str,
    offset: int,
    total: int | None,
    name: str,
    progress: ProgressCallback | None,
    url: str,
) -> None:
    done = offset
    if progress is not None:
        progress(name, done, total)
    with open(part, mode) as output:
        while True:
            try:
                chunk = response.read(_CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as error:
                output.flush()
                raise DownloadError(
                    f"Download of {url} was interrupted after {done:,} bytes ({type(error).__name__}: {error}). "
                    f"Run the same command again to resume."
                ) from None
            if not chunk:
                break
            output.write(chunk)
            done += len(chunk)
            if total is not None and done > total:
                output.close()
                part.unlink()
                raise DownloadError(
                    f"Server sent more than the announced {total:,} bytes for {url}; the partial file was "
                    f"deleted. Try again later."
                )
            if progress is not None:
                progress(name, done, total)


def _check_free_space(folder: Path, total: int | None, offset: int, url: str) -> None:
    """Raise DownloadError when `folder` lacks room for the rest of the download plus its extracted copy."""
    if total is None:
        return
    needed = (total - offset) + total
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DownloadError(
            f"Not enough disk space in '{folder}' for {url}: about {needed / 1e9:.1f} GB is needed to download "
            f"and extract it, but {free / 1e9:.1f} GB is free. Free some space or choose another --dest."
        )


def _content_range_total(header: str | None) -> int | None:
    match = _CONTENT_RANGE.fullmatch((header or "").strip())
    if match is None or match.group("total") == "*":
        return None
    return int(match.group("total"))


def _reuse_existing_file(url: str, path: Path, part: Path, timeout: float) -> bool:
    """Tell whether an already downloaded `path` can be used as it is.

    It can when the server reports the same size or cannot be reached. A smaller file becomes the `.part`
    file so the download resumes, and a larger one is deleted.
    """
    size = path.stat().st_size
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": f"dogbreeds/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
    except (urllib.error.URLError, OSError) as error:
        logger.warning("Cannot check the size of '%s' against %s (%s); using the file as it is.", path, url, error)
        return True
    if length is None or not length.isdigit() or int(length) == size:
        logger.info("Using the already downloaded '%s'.", path)
        return True

    if int(length) > size:
        logger.warning("'%s' has %s of %s bytes; resuming the download.", path, f"{size:,}", f"{int(length):,}")
        os.replace(path, part)
    else:
        logger.warning("'%s' is larger than the server's %s bytes; downloading it again.", path, f"{int(length):,}")
        path.unlink()
    return False


def check_tar_members(tar: tarfile.TarFile, dest: Path) -> list[tarfile.TarInfo]:
    """Return the members of `tar` after checking that each is a plain file or folder inside `dest`.

    Raises UnsafeArchiveError, naming the member, for links, devices, absolute paths and paths that would
    resolve outside `dest`.
    """
    root = dest.resolve()
    members = tar.getmembers()
    for member in members:
        if member.issym() or member.islnk():
            raise UnsafeArchiveError(
                f"Archive '{tar.name}' has a link member '{member.name}' -> '{member.linkname}'; links are "
                f"rejected so nothing can be written outside '{dest}'. Nothing was extracted; use the official archive."
            )
        if not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(
                f"Archive '{tar.name}' has a member '{member.name}' that is not a file or folder; "
                f"nothing was extracted."
            )
        name = PurePosixPath(member.name)
        target = (root / member.name).resolve()
        if name.is_absolute() or ".." in name.parts or (target != root and root not in target.parents):
            raise UnsafeArchiveError(
                f"Archive '{tar.name}' has a member '{member.name}' that would be written outside '{dest}'; "
                f"nothing was extracted. Use the official archive."
            )
    return members


def extract_tar(archive: Path, dest: Path, *, progress: ProgressCallback | None = None) -> None:
    """Extract `archive` into `dest` after `check_tar_members` accepts every member.

    Uses tarfile's "data" filter too where Python provides it (3.11.4+), which also drops special
    permission bits. Raises UnsafeArchiveError before anything is written, or DownloadError when the
    archive is damaged.
    """
    dest.mkdir(parents=True, exist_ok=True)
    label = f"extracting {archive.name}"
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = check_tar_members(tar, dest)
            total = sum(member.size for member in members)
            filter_options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=_report_progress(members, label, total, progress), **filter_options)
    except tarfile.TarError as error:
        raise DownloadError(
            f"Archive '{archive}' is damaged ({error}). Delete it and run the download again."
        ) from error
    logger.info("Extracted %d entries from '%s' into '%s'.", len(members), archive, dest)


def _report_progress(
    members: list[tarfile.TarInfo], label: str, total: int, progress: ProgressCallback | None
) -> Iterator[tarfile.TarInfo]:
    done = 0
    for member in members:
        yield member
        done += member.size
        if progress is not None:
            progress(label, done, total)


def main(argv: list[str] | None = None) -> int:
    """Run the download command line and return the exit status (0 on success, 1 on failure)."""
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds.data download",
        description="Download the Stanford Dogs photos (images.tar, an estimated 0.75 GB) and the official split lists "
                    "(lists.tar), extract them, and print the folder to train on.",
    )
    parser.add_argument("--dest", type=Path, default=Path("images"), metavar="DIR",
                        help="folder to download and extract into (default: ./images)")
    parser.add_argument("--base-url", "--base_url", default=STANFORD_DOGS_URL, metavar="URL",
                        help=f"folder URL that contains images.tar and lists.tar (default: {STANFORD_DOGS_URL})")
    parser.add_argument("--keep-archives", "--keep_archives", action="store_true",
                        help="keep the .tar files after extracting them (default: delete them)")
    arguments = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")

    bars = _ProgressBars()
    try:
        root = download_stanford_dogs(
            arguments.dest, base_url=arguments.base_url, progress=bars.update, keep_archives=arguments.keep_archives
        )
    except (DownloadError, UnsafeArchiveError, DataFolderError, OSError) as error:
        bars.close()
        print(f"error: {error}", file=sys.stderr)
        return 1
    bars.close()

    lists = Path(arguments.dest) / LISTS_FOLDER
    print(f"Stanford Dogs is ready. Folder to train on: {root}")
    print(f"  python -m dogbreeds.train --train_dir {root}")
    print(f"Official split lists (optional): --split_lists {lists}")
    return 0


class _ProgressBars:
    """One tqdm bar per file name, fed by `download_stanford_dogs`'s progress callback."""

    def __init__(self) -> None:
        self._bars: dict = {}

    def update(self, name: str, done: int, total: int | None) -> None:
        from tqdm import tqdm

        bar = self._bars.get(name)
        if bar is None:
            bar = tqdm(total=total, initial=done, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                       leave=True, file=sys.stderr)
            self._bars[name] = bar
            return
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


if __name__ == "__main__":
    sys.exit(main())
