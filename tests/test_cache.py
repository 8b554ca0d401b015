"""Tests for dogbreeds.cache: building, reusing, verifying and rebuilding the decoded-image cache."""

from __future__ import annotations

import json
import logging
import os
import pickle
import sys
from collections import namedtuple
from pathlib import Path

import imagegen
import numpy as np
import pytest
import torch

from _cache_helpers import DecodeCounter
from dogbreeds import cache as cache_module
from dogbreeds.cache import CacheError, ImageCache, load_or_build_cache, validate_images
from dogbreeds.decode import load_rgb
from dogbreeds.transforms import fit_square

SIDE = 12


def _images(root: Path, count: int = 6) -> list[Path]:
    return imagegen.make_class_tree(root, {"n1-A": count // 2, "n2-B": count - count // 2}, size=(20, 15))


def _expected_row(path: Path, side: int = SIDE) -> np.ndarray:
    return fit_square(load_rgb(path, min_side=side), side)


def _cache_files(cache_dir: Path) -> list[str]:
    return sorted(path.name for path in cache_dir.iterdir())


def test_build_stores_fit_square_rows(tmp_path) -> None:
    paths = _images(tmp_path / "images")

    cache = load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)

    assert cache.count == len(paths)
    assert cache.side == SIDE
    assert cache.errors == {}
    assert cache.array.shape == (len(paths), SIDE, SIDE, 3)
    for row, path in enumerate(paths):
        assert np.array_equal(cache.array[row], _expected_row(path))
    files = _cache_files(tmp_path / "cache")
    assert len(files) == 2
    assert files[0].endswith(".json")
    assert files[1].endswith(".u8")


def test_read_returns_uint8_batch(tmp_path) -> None:
    paths = _images(tmp_path / "images")
    cache = load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)

    batch = cache.read([4, 0, 4])

    assert batch.dtype == torch.uint8
    assert batch.shape == (3, 3, SIDE, SIDE)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert np.array_equal(batch[0].permute(1, 2, 0).numpy(), _expected_row(paths[4]))
    assert np.array_equal(batch[1].permute(1, 2, 0).numpy(), _expected_row(paths[0]))


def test_second_open_decodes_nothing(tmp_path, monkeypatch) -> None:
    paths = _images(tmp_path / "images")
    counter = DecodeCounter(monkeypatch)

    first = load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)
    decodes_after_build = counter.calls
    second = load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)

    assert decodes_after_build == len(paths)
    assert counter.calls == len(paths)
    assert second.data_path == first.data_path
    assert np.array_equal(np.asarray(second.array), np.asarray(first.array))


def test_changed_file_rebuilds_cache(tmp_path, monkeypatch) -> None:
    paths = _images(tmp_path / "images")
    first = load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)
    counter = DecodeCounter(monkeypatch)

    imagegen.write_jpeg(paths[1], size=(20, 15), color=(10, 10, 10))
    stat = paths[1].stat()
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)

    assert counter.calls == len(paths)
    assert second.data_path != first.data_path
    assert np.array_equal(second.array[1], _expected_row(paths[1]))
    # The stale cache of the same folder and side is deleted.
    assert _cache_files(tmp_path / "cache") == sorted([second.data_path.name, second.data_path.stem + ".json"])


def test_other_side_gets_own_cache(tmp_path) -> None:
    paths = _images(tmp_path / "images")

    small = load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)
    large = load_or_build_cache(paths, SIDE + 4, tmp_path / "cache", workers=0)

    assert small.data_path != large.data_path
    assert small.data_path.exists()
    assert large.array.shape[1:3] == (SIDE + 4, SIDE + 4)


def test_truncated_cache_is_rebuilt(tmp_path, monkeypatch, caplog) -> None:
    paths = _images(tmp_path / "images")
    first = load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)
    with open(first.data_path, "r+b") as handle:
        handle.truncate(100)
    counter = DecodeCounter(monkeypatch)

    with caplog.at_level(logging.WARNING, logger="dogbreeds.cache"):
        second = load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)

    assert counter.calls == len(paths)
    assert "truncated" in caplog.text
    assert second.data_path.stat().st_size == len(paths) * 3 * SIDE * SIDE
    assert np.array_equal(second.array[5], _expected_row(paths[5]))


def test_damaged_pixels_are_rebuilt(tmp_path, monkeypatch, caplog) -> None:
    paths = _images(tmp_path / "images")
    first = load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)
    row_bytes = 3 * SIDE * SIDE
    with open(first.data_path, "r+b") as handle:
        handle.seek(3 * row_bytes + 7)
        original = handle.read(1)
        handle.seek(3 * row_bytes + 7)
        handle.write(bytes([original[0] ^ 0xFF]))
    counter = DecodeCounter(monkeypatch)

    with caplog.at_level(logging.WARNING, logger="dogbreeds.cache"):
        second = load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)

    assert counter.calls == len(paths)
    assert "row 3" in caplog.text
    assert np.array_equal(second.array[3], _expected_row(paths[3]))


@pytest.mark.parametrize("manifest_text", ["{not json", "[]", '{"format": 1}', ""])
def test_bad_manifest_is_rebuilt(tmp_path, monkeypatch, caplog, manifest_text: str) -> None:
    paths = _images(tmp_path / "images")
    first = load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)
    first.data_path.with_suffix(".json").write_text(manifest_text)
    counter = DecodeCounter(monkeypatch)

    with caplog.at_level(logging.WARNING, logger="dogbreeds.cache"):
        second = load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)

    assert counter.calls == len(paths)
    assert "Rebuilding image cache" in caplog.text
    manifest = json.loads(second.data_path.with_suffix(".json").read_text())
    assert manifest["count"] == len(paths)


def test_missing_manifest_is_rebuilt(tmp_path, monkeypatch) -> None:
    paths = _images(tmp_path / "images")
    first = load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)
    first.data_path.with_suffix(".json").unlink()
    counter = DecodeCounter(monkeypatch)

    load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)

    assert counter.calls == len(paths)


def test_unreadable_files_recorded(tmp_path) -> None:
    paths = _images(tmp_path / "images")
    bad = imagegen.write_bytes(tmp_path / "images" / "n1-A" / "broken.jpg", b"\xff\xd8\xff\xe0 truncated")
    missing = tmp_path / "images" / "n2-B" / "gone.jpg"
    all_paths = [*paths, bad, missing]

    cache = load_or_build_cache(all_paths, SIDE, tmp_path / "cache", workers=0)
    reopened = load_or_build_cache(all_paths, SIDE, tmp_path / "cache", workers=0)

    assert sorted(cache.errors) == [len(paths), len(paths) + 1]
    assert "broken.jpg" in cache.errors[len(paths)]
    assert "gone.jpg" in cache.errors[len(paths) + 1]
    assert cache.readable == [True] * len(paths) + [False, False]
    assert not cache.array[len(paths)].any()
    assert reopened.errors == cache.errors
    manifest = json.loads(cache.data_path.with_suffix(".json").read_text())
    assert [entry["path"] for entry in manifest["failed"]] == [str(bad), str(missing)]


def test_parallel_build_matches_serial(tmp_path, monkeypatch) -> None:
    paths = _images(tmp_path / "images", count=10)
    monkeypatch.setattr(cache_module, "CHUNK_SIZE", 3)
    progress: list[tuple[int, int]] = []

    serial = load_or_build_cache(paths, SIDE, tmp_path / "serial", workers=0)
    parallel = load_or_build_cache(
        paths, SIDE, tmp_path / "parallel", workers=2, progress=lambda done, total: progress.append((done, total))
    )

    assert np.array_equal(np.asarray(parallel.array), np.asarray(serial.array))
    assert progress[-1] == (10, 10)
    assert len(progress) == 4


def test_spawn_workers_build_cache(tmp_path, monkeypatch) -> None:
    paths = _images(tmp_path / "images", count=4)
    monkeypatch.setattr(cache_module, "CHUNK_SIZE", 2)

    cache = load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=2, mp_context="spawn")

    for row, path in enumerate(paths):
        assert np.array_equal(cache.array[row], _expected_row(path))


def test_cache_pickles_without_pixels(tmp_path) -> None:
    paths = _images(tmp_path / "images", count=40)
    cache = load_or_build_cache(paths, 32, tmp_path / "cache", workers=0)
    cache.array  # open the map so pickling has something to leave out

    data = pickle.dumps(cache)
    copy: ImageCache = pickle.loads(data)

    assert len(data) < 2000
    assert np.array_equal(copy.read([7]).numpy(), cache.read([7]).numpy())


def test_no_disk_space_raises_cache_error(tmp_path, monkeypatch) -> None:
    paths = _images(tmp_path / "images")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1000))

    with pytest.raises(CacheError, match="turn the cache off"):
        load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)


def test_unwritable_folder_raises_cache_error(tmp_path) -> None:
    paths = _images(tmp_path / "images")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should go")

    with pytest.raises(CacheError, match="blocker"):
        load_or_build_cache(paths, SIDE, blocker / "cache", workers=0)


def test_recent_temporary_files_kept(tmp_path) -> None:
    paths = _images(tmp_path / "images")
    first = load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)
    in_progress = first.data_path.with_name(first.data_path.stem[:-16] + "0" * 16 + ".u8.tmp999")
    in_progress.write_bytes(b"partial")
    leftover = first.data_path.with_name(first.data_path.stem[:-16] + "1" * 16 + ".u8.tmp998")
    leftover.write_bytes(b"old")
    os.utime(leftover, (0, 0))

    imagegen.write_jpeg(paths[0], size=(20, 15), color=(1, 2, 3))
    os.utime(paths[0], ns=(0, 123))
    load_or_build_cache(paths, SIDE, tmp_path / "cache", workers=0)

    assert in_progress.exists()
    assert not leftover.exists()


def test_validate_images_reports_failures(tmp_path) -> None:
    paths = _images(tmp_path / "images")
    bad = imagegen.write_bytes(tmp_path / "images" / "n2-B" / "empty.png", b"")

    errors = validate_images([*paths, bad], SIDE, workers=0)

    assert errors[: len(paths)] == [None] * len(paths)
    assert errors[-1] is not None
    assert "empty.png" in errors[-1]


def test_empty_path_list_rejected(tmp_path) -> None:
    with pytest.raises(ValueError, match="at least one image"):
        load_or_build_cache([], SIDE, tmp_path / "cache")


def test_negative_workers_rejected(tmp_path) -> None:
    paths = _images(tmp_path / "images")

    with pytest.raises(ValueError, match="workers"):
        validate_images(paths, SIDE, workers=-1)


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux file systems accept file names that are not UTF-8")
def test_non_utf8_file_name_cached(tmp_path) -> None:
    paths = _images(tmp_path / "images")
    odd = Path(os.fsdecode(os.fsencode(tmp_path / "images" / "n1-A") + b"/caf\xe9.jpg"))
    imagegen.write_jpeg(odd, size=(20, 15), seed=9)

    cache = load_or_build_cache([*paths, odd], SIDE, tmp_path / "cache", workers=0)
    reopened = load_or_build_cache([*paths, odd], SIDE, tmp_path / "cache", workers=0)

    assert cache.errors == {}
    assert reopened.data_path == cache.data_path
    assert np.array_equal(cache.array[len(paths)], _expected_row(odd))
