"""Decoded-image cache: every image decoded once into a uint8 memory-mapped file, reused across epochs and runs.

A cache is two files in the cache folder that share a stem, ``<folder>-<root hash>-<side>px-<fingerprint>``:

- ``.u8``: raw uint8 pixels shaped [N, side, side, 3], row i holding ``fit_square`` of ``paths[i]``. Channels are
  the last axis, as in decoded images, so the training crops can hand rows to OpenCV without a copy.
- ``.json``: the manifest: format version, fingerprint, shape, the CRC-32 of every row, and the files that failed
  to decode (their rows stay zero).

The fingerprint covers the file list, each file's size and modification time, the side and the Pillow version, so
a changed image set gets a new cache. Both files are written under temporary names and renamed into place, the
manifest last, and every row's CRC is checked when a cache is opened, so a truncated or damaged cache is rebuilt
instead of read. Worker processes decode chunks of files and write the pixels straight into the memory map, so
the parent process receives only row numbers, checksums and error messages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
from tqdm.auto import tqdm

from dogbreeds.decode import ImageDecodeError, load_rgb
from dogbreeds.transforms import fit_square

logger = logging.getLogger(__name__)

# Format 2 stores rows as [side, side, 3]. Format 1 stored [3, side, side], and its caches are rebuilt.
CACHE_FORMAT = 2

# Files per task sent to a worker process: large enough to amortise the task overhead (one memmap open, one
# pickled result), small enough for a smooth progress bar.
CHUNK_SIZE = 32

# Rows checked per step when verifying checksums, to bound how much of the map one step touches (~32 MB at 146 px).
_VERIFY_ROWS = 512

# Temporary files older than this are leftovers of a build that was killed, and are deleted with stale caches.
_TEMPORARY_FILE_MAX_AGE_S = 24 * 3600

ProgressCallback = Callable[[int, int], None]


class CacheError(OSError):
    """Raised when the image cache cannot be created, for example for lack of disk space or permission."""


@dataclass
class ImageCache:
    """Open decoded-image cache: uint8 pixels shaped [count, side, side, 3] in a read-only memory map.

    Pickling keeps only the file location and metadata, and the map is reopened on first use, so an ImageCache can
    be sent to worker processes under the ``spawn`` start method without copying the pixels.
    """

    data_path: Path
    count: int
    side: int
    errors: dict[int, str] = field(default_factory=dict)
    _array: np.memmap | None = field(default=None, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.count, self.side, self.side, 3)

    @property
    def readable(self) -> list[bool]:
        """Per row, whether the file decoded (failed rows hold zeros)."""
        return [row not in self.errors for row in range(self.count)]

    @property
    def array(self) -> np.memmap:
        """The read-only memory map, opened on first access."""
        if self._array is None:
            self._array = np.memmap(self.data_path, dtype=np.uint8, mode="r", shape=self.shape)
        return self._array

    def read(self, rows: Sequence[int]) -> torch.Tensor:
        """Copy the given rows out of the map into a new uint8 tensor [len(rows), 3, side, side].

        The tensor is in torch.channels_last memory format: a view of the copied [len(rows), side, side, 3] rows.
        """
        batch = np.take(self.array, np.asarray(rows, dtype=np.int64), axis=0)
        return torch.from_numpy(batch).permute(0, 3, 1, 2)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None
        return state


def usable_cores() -> int:
    """Return the CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_workers() -> int:
    """Return the default number of worker processes: the usable CPU cores, at most 4."""
    return max(1, min(4, usable_cores()))


def cache_fingerprint(paths: Sequence[Path], side: int) -> str:
    """Return a hex digest of the file list, each file's size and modification time, the side and the decoder."""
    digest = hashlib.sha256()
    digest.update(f"format={CACHE_FORMAT};side={side};pillow={PIL.__version__};count={len(paths)}\n".encode())
    for path in paths:
        try:
            stat = os.stat(path)
            size, modified = stat.st_size, stat.st_mtime_ns
        except OSError:
            # A missing file gets a stable marker so it fails to decode in the build and is listed in the manifest.
            size, modified = -1, -1
        # os.fsencode keeps file names that are not valid UTF-8 (Linux allows any bytes) hashable.
        digest.update(os.fsencode(path) + f"\0{size}\0{modified}\n".encode())
    return digest.hexdigest()


def cache_stem(paths: Sequence[Path], side: int, fingerprint: str) -> str:
    """Return the file name stem of the cache for these paths, readable enough to tell caches apart by eye."""
    family = _cache_family(paths, side)
    return f"{family}-{fingerprint[:16]}"


def load_or_build_cache(
    paths: Sequence[Path],
    side: int,
    cache_dir: Path,
    *,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    mp_context: str | None = None,
) -> ImageCache:
    """Open the cache of ``paths`` decoded at ``side`` px, building it first if it is missing, stale or damaged.

    Files that fail to decode are recorded in ``ImageCache.errors`` (row -> reason) instead of raising. Older
    caches of the same folder and side are deleted after a build. ``workers`` is the number of decoding processes,
    ``default_workers()`` when None. With 0 or 1 the files are decoded in this process. ``mp_context`` names a
    multiprocessing start method (None: the platform default). Raises CacheError when the cache folder cannot be
    written or lacks space, so that callers can fall back to decoding without a cache.
    """
    paths = [Path(path) for path in paths]
    if not paths:
        raise ValueError("load_or_build_cache needs at least one image path, found none")

    cache_dir = Path(cache_dir)
    fingerprint = cache_fingerprint(paths, side)
    stem = cache_stem(paths, side, fingerprint)
    data_path = cache_dir / f"{stem}.u8"
    manifest_path = cache_dir / f"{stem}.json"

    cache, problem = _open_cache(data_path, manifest_path, fingerprint, len(paths), side)
    if cache is not None:
        logger.info(
            "Reusing image cache %s (%d images at %d px, %d unreadable)",
            data_path, cache.count, side, len(cache.errors),
        )
        return cache
    if problem is not None:
        logger.warning("Rebuilding image cache %s: %s", data_path, problem)

    # NOTE: two processes that build the same cache at once both decode everything. The result is still correct
    # because each writes its own temporary file and the renames are atomic. Multi-process training avoids it by
    # letting rank 0 prepare the data before the other ranks.
    cache = _build_cache(paths, side, data_path, manifest_path, fingerprint, workers, progress, mp_context)
    _remove_stale_caches(cache_dir, stem)
    return cache


def validate_images(
    paths: Sequence[Path],
    side: int,
    *,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    mp_context: str | None = None,
) -> list[str | None]:
    """Decode every file once, in parallel, without storing pixels, and return per file None or the failure reason.

    This is the validation pass used when the cache is switched off. ``side`` enables the same reduced-scale JPEG
    decoding as the cache build, so both passes accept and reject the same files.
    """
    paths = [Path(path) for path in paths]
    tasks = [(side, [(row, os.fspath(path)) for row, path in chunk]) for chunk in _chunks(list(enumerate(paths)))]
    errors: list[str | None] = [None] * len(paths)

    started = time.perf_counter()
    logger.info("Checking that %d images decode (%s)", len(paths), _workers_text(workers, len(tasks)))
    for results in _run_tasks(_validate_chunk, tasks, workers, len(paths), "Checking images", progress, mp_context):
        for row, error in results:
            errors[row] = error

    failed = sum(error is not None for error in errors)
    logger.info("Checked %d images in %.1f s, %d unreadable", len(paths), time.perf_counter() - started, failed)
    return errors


def _open_cache(
    data_path: Path, manifest_path: Path, fingerprint: str, count: int, side: int
) -> tuple[ImageCache | None, str | None]:
    """Open and verify an existing cache; return (cache, None), (None, reason it is unusable) or (None, None)."""
    if not manifest_path.exists() and not data_path.exists():
        return None, None

    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "the manifest is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"the manifest cannot be read ({error})"

    problem = _check_manifest(manifest, fingerprint, count, side)
    if problem is not None:
        return None, problem

    expected_bytes = count * 3 * side * side
    try:
        found_bytes = data_path.stat().st_size
    except OSError as error:
        return None, f"the pixel file cannot be read ({error})"
    if found_bytes != expected_bytes:
        return None, f"the pixel file has {found_bytes} bytes, expected {expected_bytes} (truncated or replaced)"

    errors = {int(entry["row"]): str(entry["error"]) for entry in manifest["failed"]}
    cache = ImageCache(data_path=data_path, count=count, side=side, errors=errors)
    bad_row = _first_bad_row(cache, manifest["row_crc32"])
    if bad_row is not None:
        return None, f"row {bad_row} does not match its checksum (the file is damaged)"
    return cache, None


def _check_manifest(manifest: Any, fingerprint: str, count: int, side: int) -> str | None:
    if not isinstance(manifest, dict):
        return "the manifest is not a JSON object"
    expected = {"format": CACHE_FORMAT, "fingerprint": fingerprint, "count": count, "side": side}
    for key, value in expected.items():
        if manifest.get(key) != value:
            return f"manifest field {key!r} is {manifest.get(key)!r}, expected {value!r}"

    checksums = manifest.get("row_crc32")
    if not isinstance(checksums, list) or len(checksums) != count:
        return "the manifest's row checksums are missing or of the wrong length"
    failed = manifest.get("failed")
    if not isinstance(failed, list) or not all(isinstance(entry, dict) and "row" in entry for entry in failed):
        return "the manifest's list of failed files is invalid"
    return None


def _first_bad_row(cache: ImageCache, checksums: Sequence[int | None]) -> int | None:
    """Return the first row whose CRC-32 differs from the manifest, or None when all match."""
    array = cache.array
    for start in range(0, cache.count, _VERIFY_ROWS):
        block = array[start : start + _VERIFY_ROWS]
        for offset in range(block.shape[0]):
            expected = checksums[start + offset]
            if expected is not None and zlib.crc32(block[offset]) != expected:
                return start + offset
    return None


def _build_cache(
    paths: list[Path],
    side: int,
    data_path: Path,
    manifest_path: Path,
    fingerprint: str,
    workers: int | None,
    progress: ProgressCallback | None,
    mp_context: str | None,
) -> ImageCache:
    count = len(paths)
    size_bytes = count * 3 * side * side
    temporary_path = data_path.with_name(f"{data_path.name}.tmp{os.getpid()}")
    _create_sparse_file(temporary_path, size_bytes)

    tasks = [
        (os.fspath(temporary_path), count, side, [(row, os.fspath(path)) for row, path in chunk])
        for chunk in _chunks(list(enumerate(paths)))
    ]
    checksums: list[int | None] = [None] * count
    failed: list[dict[str, Any]] = []

    started = time.perf_counter()
    logger.info(
        "Building image cache %s: %d images at %d px, %.0f MB (%s)",
        data_path, count, side, size_bytes / 1e6, _workers_text(workers, len(tasks)),
    )
    try:
        for results in _run_tasks(_decode_chunk, tasks, workers, count, "Caching images", progress, mp_context):
            for row, checksum, error in results:
                checksums[row] = checksum
                if error is not None:
                    failed.append({"row": row, "path": os.fspath(paths[row]), "error": error})
        os.replace(temporary_path, data_path)
    finally:
        temporary_path.unlink(missing_ok=True)

    manifest = {
        "format": CACHE_FORMAT,
        "fingerprint": fingerprint,
        "count": count,
        "side": side,
        "shape": [count, side, side, 3],
        "dtype": "uint8",
        "pillow": PIL.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "failed": sorted(failed, key=lambda entry: entry["row"]),
        "row_crc32": checksums,
    }
    _write_json_atomically(manifest_path, manifest)

    logger.info(
        "Built image cache in %.1f s: %d images, %d unreadable", time.perf_counter() - started, count, len(failed)
    )
    errors = {entry["row"]: entry["error"] for entry in failed}
    return ImageCache(data_path=data_path, count=count, side=side, errors=errors)


def _create_sparse_file(path: Path, size_bytes: int) -> None:
    """Create ``path`` with ``size_bytes`` zero bytes, after checking the folder is writable and has the space."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        free_bytes = shutil.disk_usage(path.parent).free
    except OSError as error:
        raise CacheError(
            f"Cannot create the image cache folder {path.parent}: {error}. "
            "Choose a writable cache folder or turn the cache off."
        ) from error

    # The 64 MB margin leaves room for the manifest and for other programs writing at the same time.
    if free_bytes < size_bytes + 64 * 2**20:
        raise CacheError(
            f"The image cache needs {size_bytes / 1e9:.2f} GB in {path.parent} but only {free_bytes / 1e9:.2f} GB "
            "is free. Free some space, choose another cache folder, or turn the cache off."
        )

    try:
        with open(path, "wb") as handle:
            handle.truncate(size_bytes)
    except OSError as error:
        raise CacheError(
            f"Cannot write the image cache file {path}: {error}. Choose a writable cache folder or turn the cache off."
        ) from error


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    temporary_path = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        temporary_path.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(temporary_path, path)
    finally:
        temporary_path.unlink(missing_ok=True)


def _remove_stale_caches(cache_dir: Path, current_stem: str) -> None:
    """Delete older caches of the same folder and side, which a changed file list or file made stale."""
    # The family part contains only letters, digits, "_" and ".", so it needs no glob escaping.
    family = current_stem.rsplit("-", 1)[0]
    now = time.time()
    for candidate in cache_dir.glob(f"{family}-*"):
        try:
            is_temporary = ".tmp" in candidate.name
            if is_temporary and now - candidate.stat().st_mtime < _TEMPORARY_FILE_MAX_AGE_S:
                # Possibly another process's build in progress.
                continue
            if not is_temporary and candidate.name.startswith(f"{current_stem}."):
                continue
            candidate.unlink()
            logger.info("Removed stale image cache file %s", candidate)
        except FileNotFoundError:
            continue
        except OSError as error:
            # A file still mapped by another process cannot be deleted on Windows, and is left for the next build.
            logger.warning("Could not remove stale image cache file %s: %s", candidate, error)


def _cache_family(paths: Sequence[Path], side: int) -> str:
    """Return ``<folder name>-<hash of the common folder>-<side>px``, shared by every cache of one image folder."""
    try:
        root = os.path.commonpath([os.fspath(path.parent) for path in paths])
    except ValueError:
        # Paths on different Windows drives have no common folder.
        root = "mixed"
    name = re.sub(r"[^A-Za-z0-9_.]+", "_", Path(root).name or "root")[:40]
    root_hash = hashlib.sha256(os.fsencode(root)).hexdigest()[:8]
    return f"{name}-{root_hash}-{side}px"


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), CHUNK_SIZE):
        yield items[start : start + CHUNK_SIZE]


def _workers_text(workers: int | None, task_count: int) -> str:
    processes = _process_count(workers, task_count)
    return "in this process" if processes == 0 else f"{processes} worker processes"


def _process_count(workers: int | None, task_count: int) -> int:
    """Return how many worker processes to start: none for a single task or when 0/1 workers are requested."""
    requested = default_workers() if workers is None else int(workers)
    if requested < 0:
        raise ValueError(f"workers must be 0 or more, found {workers}")
    if requested <= 1 or task_count <= 1:
        return 0
    return min(requested, task_count)


def _run_tasks(
    function: Callable[[Any], list[Any]],
    tasks: list[Any],
    workers: int | None,
    total: int,
    description: str,
    progress: ProgressCallback | None,
    mp_context: str | None,
) -> Iterable[list[Any]]:
    """Run ``function`` on every task, in worker processes when there are several, with progress reporting.

    Yields each task's result list as it completes (in completion order). Progress counts files: every task's result
    list has one entry per file.
    """
    processes = _process_count(workers, len(tasks))
    reporter = _ProgressReporter(total, description, progress)
    try:
        if processes == 0:
            for task in tasks:
                results = function(task)
                reporter.advance(len(results))
                yield results
            return

        context = multiprocessing.get_context(mp_context)
        with context.Pool(processes) as pool:
            for results in pool.imap_unordered(function, tasks):
                reporter.advance(len(results))
                yield results
    finally:
        reporter.close()


class _ProgressReporter:
    """Progress as a tqdm bar (terminals only), a log line about every 25 %, and an optional callback."""

    def __init__(self, total: int, description: str, callback: ProgressCallback | None) -> None:
        self.total = total
        self.done = 0
        self.description = description
        self.callback = callback
        self.next_log_fraction = 0.25
        self.bar = tqdm(total=total, desc=description, unit="img", disable=None, leave=False)

    def advance(self, count: int) -> None:
        self.done += count
        self.bar.update(count)
        if self.callback is not None:
            self.callback(self.done, self.total)
        if self.total and self.done / self.total >= self.next_log_fraction and self.done < self.total:
            logger.info("%s: %d of %d", self.description, self.done, self.total)
            while self.next_log_fraction <= self.done / self.total:
                self.next_log_fraction += 0.25

    def close(self) -> None:
        self.bar.close()


def _decode_chunk(task: tuple[str, int, int, list[tuple[int, str]]]) -> list[tuple[int, int | None, str | None]]:
    """Decode a chunk of files into the shared pixel file; return (row, CRC-32 or None, error or None) per file."""
    file_path, count, side, items = task
    # Writes through a shared map land in the page cache, where the parent and later readers see them. No flush is
    # needed, and one per chunk would force the whole file to disk again and again.
    pixels = np.memmap(file_path, dtype=np.uint8, mode="r+", shape=(count, side, side, 3))
    results: list[tuple[int, int | None, str | None]] = []
    for row, path in items:
        try:
            square = fit_square(load_rgb(path, min_side=side), side)
        except ImageDecodeError as error:
            results.append((row, None, str(error)))
            continue
        pixels[row] = square
        results.append((row, zlib.crc32(square), None))
    return results


def _validate_chunk(task: tuple[int, list[tuple[int, str]]]) -> list[tuple[int, str | None]]:
    side, items = task
    results: list[tuple[int, str | None]] = []
    for row, path in items:
        try:
            load_rgb(path, min_side=side)
        except ImageDecodeError as error:
            results.append((row, str(error)))
            continue
        results.append((row, None))
    return results
