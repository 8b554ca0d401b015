"""Tests for dogbreeds.data: prepare_data, BatchLoader (cached and decoded), sharding, and the data CLI."""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import sys
import threading
import types
from pathlib import Path

import imagegen
import numpy as np
import pytest
import torch

from _cache_helpers import DecodeCounter
from dogbreeds import cache as cache_module
from dogbreeds import data as data_module
from dogbreeds.data import (
    BatchLoader,
    DataSettings,
    ImageSet,
    PreparedData,
    loader_workers,
    prepare_data,
    stratified_sample,
)
from dogbreeds.decode import load_rgb
from dogbreeds.transforms import BatchAugment, preprocess_eval

IMAGE_SIZE = 16
CLASSES = {"n02085620-Chihuahua": 8, "n02085936-Maltese_dog": 7, "n02086079-Pekinese": 6}


@pytest.fixture
def image_root(tmp_path) -> Path:
    root = tmp_path / "images"
    imagegen.make_class_tree(root, CLASSES, size=(24, 18))
    return root


def _settings(root: Path, tmp_path: Path, **overrides) -> DataSettings:
    values = {"train_dir": root, "image_size": IMAGE_SIZE, "cache_dir": tmp_path / "cache", "workers": 0}
    values.update(overrides)
    return DataSettings(**values)


def _plain_set(count: int, side: int = 18, labels: list[int] | None = None) -> ImageSet:
    """Return an ImageSet of made-up paths (never decoded) for order and sharding tests."""
    paths = [Path(f"/nonexistent/{index}.jpg") for index in range(count)]
    return ImageSet(paths=paths, labels=labels or [index % 3 for index in range(count)], side=side)


def _batch_sizes(loader: BatchLoader) -> list[int]:
    return [len(batch) for batch in loader.epoch_batches()]


def test_prepare_data_splits_and_caches(image_root, tmp_path) -> None:
    data = prepare_data(_settings(image_root, tmp_path))

    assert isinstance(data, PreparedData)
    assert data.class_keys == sorted(CLASSES)
    assert data.class_names == ["Chihuahua", "Maltese dog", "Pekinese"]
    assert len(data.train) + len(data.val) == sum(CLASSES.values())
    assert len(data.val) > 0
    assert not set(data.train.paths) & set(data.val.paths)
    assert data.cache is not None
    assert data.train.cache is data.cache
    assert "validation" in data.description
    for images in (data.train, data.val):
        for path, label, row in zip(images.paths, images.labels, images.rows):
            assert data.class_keys[label] == path.parent.name
            expected = data_module.fit_square(load_rgb(path, min_side=18), 18).transpose(2, 0, 1)
            assert np.array_equal(data.cache.read([row])[0].numpy(), expected)


def test_prepare_data_reuses_cache(image_root, tmp_path, monkeypatch) -> None:
    counter = DecodeCounter(monkeypatch)

    first = prepare_data(_settings(image_root, tmp_path))
    decodes_after_first = counter.calls
    second = prepare_data(_settings(image_root, tmp_path))

    assert decodes_after_first == sum(CLASSES.values())
    assert counter.calls == decodes_after_first
    assert second.train.paths == first.train.paths
    assert second.cache.data_path == first.cache.data_path


def test_prepare_data_rebuilds_after_change(image_root, tmp_path, monkeypatch) -> None:
    first = prepare_data(_settings(image_root, tmp_path))
    counter = DecodeCounter(monkeypatch)

    imagegen.write_jpeg(image_root / "n02086079-Pekinese" / "n02086079_new.jpg", size=(24, 18), seed=99)
    second = prepare_data(_settings(image_root, tmp_path))

    assert counter.calls == sum(CLASSES.values()) + 1
    assert second.cache.data_path != first.cache.data_path
    assert not first.cache.data_path.exists()


def test_bad_file_skipped_with_warning(image_root, tmp_path, caplog) -> None:
    bad = imagegen.write_bytes(image_root / "n02085620-Chihuahua" / "n02085620_bad.jpg", b"GIF89a broken")

    with caplog.at_level(logging.WARNING):
        data = prepare_data(_settings(image_root, tmp_path))

    assert bad not in data.train.paths
    assert bad not in data.val.paths
    assert len(data.train) + len(data.val) == sum(CLASSES.values())
    assert "n02085620_bad.jpg" in caplog.text
    assert "Skipped 1 unreadable" in data.description


def test_cache_off_validates_without_files(image_root, tmp_path, caplog) -> None:
    bad = imagegen.write_bytes(image_root / "n02085936-Maltese_dog" / "n02085936_bad.png", b"\x89PNG\r\n\x1a\nxx")

    with caplog.at_level(logging.WARNING):
        data = prepare_data(_settings(image_root, tmp_path, use_cache=False))

    assert data.cache is None
    assert data.train.cache is None
    assert not (tmp_path / "cache").exists()
    assert bad not in data.train.paths + data.val.paths
    assert "n02085936_bad.png" in caplog.text


def test_cache_error_falls_back(image_root, tmp_path, monkeypatch, caplog) -> None:
    def raise_cache_error(*args, **kwargs):
        raise cache_module.CacheError("no space left in the test")

    monkeypatch.setattr(data_module, "load_or_build_cache", raise_cache_error)

    with caplog.at_level(logging.WARNING):
        data = prepare_data(_settings(image_root, tmp_path))

    assert data.cache is None
    assert len(data.train) + len(data.val) == sum(CLASSES.values())
    assert "Continuing without the image cache" in caplog.text


@pytest.mark.parametrize("use_cache", [True, False])
def test_eval_loader_matches_preprocess_eval(image_root, tmp_path, use_cache: bool) -> None:
    imagegen.write_png(image_root / "n02085620-Chihuahua" / "n02085620_wide.png", size=(40, 13), seed=5)
    # Large enough for reduced-scale JPEG decoding (80x60 decodes at 40x30 for an 18 px square).
    for index in range(4):
        path = image_root / "n02085936-Maltese_dog" / f"n02085936_big{index}.jpg"
        imagegen.write_jpeg(path, size=(80, 60), seed=index)
    data = prepare_data(_settings(image_root, tmp_path, use_cache=use_cache, val_fraction=0.5))
    loader = BatchLoader(data.val, 4, train=False, image_size=IMAGE_SIZE, with_indices=True, workers=0)
    assert any("_big" in path.name for path in data.val.paths)

    seen = []
    for images, labels, positions in loader:
        for offset, position in enumerate(positions.tolist()):
            seen.append(position)
            expected = preprocess_eval(data.val.paths[position], IMAGE_SIZE)
            assert torch.equal(images[offset], expected)
            assert labels[offset].item() == data.val.labels[position]

    assert seen == list(range(len(data.val)))


def test_train_batches_shape_and_labels(image_root, tmp_path) -> None:
    data = prepare_data(_settings(image_root, tmp_path))
    loader = BatchLoader(data.train, 4, train=True, image_size=IMAGE_SIZE, with_indices=True)

    count = 0
    for images, labels, positions in loader:
        count += len(labels)
        assert images.shape == (len(labels), 3, IMAGE_SIZE, IMAGE_SIZE)
        assert images.dtype == torch.float32
        assert labels.dtype == torch.int64
        assert labels.tolist() == [data.train.labels[i] for i in positions.tolist()]

    assert count == len(data.train)


def test_train_order_per_seed_and_epoch() -> None:
    loader = BatchLoader(_plain_set(20), 4, train=True, image_size=IMAGE_SIZE, seed=3)
    same = BatchLoader(_plain_set(20), 4, train=True, image_size=IMAGE_SIZE, seed=3)
    other_seed = BatchLoader(_plain_set(20), 4, train=True, image_size=IMAGE_SIZE, seed=4)

    first = np.concatenate(loader.epoch_batches(0))
    assert sorted(first.tolist()) == list(range(20))
    assert np.array_equal(first, np.concatenate(same.epoch_batches(0)))
    assert not np.array_equal(first, np.concatenate(loader.epoch_batches(1)))
    assert not np.array_equal(first, np.concatenate(other_seed.epoch_batches(0)))


def test_train_augmentation_reproducible(image_root, tmp_path) -> None:
    data = prepare_data(_settings(image_root, tmp_path))

    def first_batch(epoch: int) -> torch.Tensor:
        loader = BatchLoader(data.train, 4, train=True, image_size=IMAGE_SIZE, seed=1)
        loader.set_epoch(epoch)
        return next(iter(loader))[0]

    assert torch.equal(first_batch(0), first_batch(0))
    assert not torch.equal(first_batch(0), first_batch(1))


@pytest.mark.parametrize(
    ("count", "batch_size", "expected"),
    [(9, 4, [4, 5]), (10, 4, [4, 4, 2]), (8, 4, [4, 4]), (5, 4, [5]), (3, 8, [3]), (2, 64, [2]), (13, 4, [4, 4, 5])],
)
def test_train_batch_sizes(count: int, batch_size: int, expected: list[int]) -> None:
    loader = BatchLoader(_plain_set(count), batch_size, train=True, image_size=IMAGE_SIZE)

    assert _batch_sizes(loader) == expected
    assert len(loader) == len(expected)


def test_eval_batch_sizes_keep_last_one() -> None:
    loader = BatchLoader(_plain_set(9), 4, train=False, image_size=IMAGE_SIZE)

    assert _batch_sizes(loader) == [4, 4, 1]
    assert len(loader) == 3


def test_tiny_set_batch_shrinks(image_root, tmp_path) -> None:
    data = prepare_data(_settings(image_root, tmp_path))
    tiny = ImageSet(data.train.paths[:3], data.train.labels[:3], data.train.side, data.cache, data.train.rows[:3])

    batches = list(BatchLoader(tiny, 64, train=True, image_size=IMAGE_SIZE))

    assert len(batches) == 1
    assert batches[0][0].shape[0] == 3


def test_train_sharding_disjoint_equal() -> None:
    loaders = [
        BatchLoader(_plain_set(23), 4, train=True, image_size=IMAGE_SIZE, rank=rank, world_size=3) for rank in range(3)
    ]

    for epoch in (0, 1):
        shards = [np.concatenate(loader.epoch_batches(epoch)).tolist() for loader in loaders]
        assert [len(shard) for shard in shards] == [7, 7, 7]
        assert len(set(shards[0]) | set(shards[1]) | set(shards[2])) == 21
        assert len({len(loader) for loader in loaders}) == 1


def test_eval_sharding_covers_all_once() -> None:
    loaders = [
        BatchLoader(_plain_set(10), 3, train=False, image_size=IMAGE_SIZE, rank=rank, world_size=4) for rank in range(4)
    ]

    shards = [np.concatenate(loader.epoch_batches()).tolist() if len(loader) else [] for loader in loaders]

    assert [len(shard) for shard in shards] == [3, 3, 2, 2]
    assert sum(shards, []) == list(range(10))


def test_eval_sharding_more_ranks_than_samples() -> None:
    loaders = [
        BatchLoader(_plain_set(2), 3, train=False, image_size=IMAGE_SIZE, rank=rank, world_size=3) for rank in range(3)
    ]

    assert [len(loader) for loader in loaders] == [1, 1, 0]
    assert list(loaders[2]) == []


def test_loader_rejects_invalid_arguments() -> None:
    images = _plain_set(10)

    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(images, 1, train=True, image_size=IMAGE_SIZE)
    with pytest.raises(ValueError, match="rank"):
        BatchLoader(images, 4, train=True, image_size=IMAGE_SIZE, rank=2, world_size=2)
    with pytest.raises(ValueError, match="image_size 32"):
        BatchLoader(images, 4, train=False, image_size=32)
    with pytest.raises(ValueError, match="at least 2 images per process"):
        BatchLoader(_plain_set(3), 4, train=True, image_size=IMAGE_SIZE, world_size=2)


def test_decoding_loader_skips_broken_file(image_root, tmp_path, caplog) -> None:
    data = prepare_data(_settings(image_root, tmp_path, use_cache=False))
    broken = data.train.paths[0]
    broken.write_bytes(b"damaged after the check")
    loader = BatchLoader(data.train, 4, train=True, image_size=IMAGE_SIZE, with_indices=True, workers=0)

    with caplog.at_level(logging.WARNING, logger="dogbreeds.data"):
        seen = [position for _, _, positions in loader for position in positions.tolist()]
        seen_again = [position for _, _, positions in loader for position in positions.tolist()]

    assert 0 not in seen
    assert len(seen) >= len(data.train) - 2  # the batch that held the file may drop below two samples
    warnings = [record for record in caplog.records if broken.name in record.getMessage()]
    assert len(warnings) == 1
    assert 0 not in seen_again


def test_decoding_loader_with_spawn_workers(image_root, tmp_path) -> None:
    data = prepare_data(_settings(image_root, tmp_path, use_cache=False, val_fraction=0.5))
    loader = BatchLoader(data.val, 4, train=False, image_size=IMAGE_SIZE, workers=2, mp_context="spawn")

    batches = list(loader)
    again = list(loader)

    assert sum(len(labels) for _, labels in batches) == len(data.val)
    expected = preprocess_eval(data.val.paths[0], IMAGE_SIZE)
    assert torch.equal(batches[0][0][0], expected)
    assert torch.equal(again[0][0][0], expected)


def _augment_in_child(images: ImageSet, augment: BatchAugment, rows: list[int]) -> torch.Tensor:
    return augment(images.cache.read(rows), torch.Generator().manual_seed(0))


def test_cached_set_pickles_for_spawn(image_root, tmp_path) -> None:
    data = prepare_data(_settings(image_root, tmp_path))
    augment = BatchAugment(IMAGE_SIZE)
    rows = data.train.rows[:3]

    assert len(pickle.dumps(data)) < 20_000
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        from_child = pool.apply(_augment_in_child, (data.train, augment, rows))

    assert torch.equal(from_child, _augment_in_child(data.train, augment, rows))


def test_prefetch_stops_on_break(image_root, tmp_path) -> None:
    data = prepare_data(_settings(image_root, tmp_path))
    loader = BatchLoader(data.train, 2, train=True, image_size=IMAGE_SIZE)

    for _ in loader:
        break
    batches = list(loader)

    assert len(batches) == len(loader)


def test_decoding_loader_restarts_after_break(image_root, tmp_path) -> None:
    data = prepare_data(_settings(image_root, tmp_path, use_cache=False))
    loader = BatchLoader(data.train, 4, train=True, image_size=IMAGE_SIZE, workers=2)

    for _ in loader:
        break
    loader.set_epoch(1)
    batches = list(loader)

    assert len(batches) == len(loader)
    assert sum(len(labels) for _, labels in batches) == len(data.train)


def test_prefetch_reraises_errors(image_root, tmp_path) -> None:
    data = prepare_data(_settings(image_root, tmp_path))
    loader = BatchLoader(data.train, 2, train=True, image_size=IMAGE_SIZE)
    loader.images.cache._array = None
    loader.images.cache.data_path = tmp_path / "missing.u8"

    with pytest.raises(FileNotFoundError):
        list(loader)


def test_prefetch_keeps_thread_count(image_root, tmp_path) -> None:
    data = prepare_data(_settings(image_root, tmp_path))
    before = torch.get_num_threads()

    list(BatchLoader(data.train, 4, train=True, image_size=IMAGE_SIZE, prefetch=True))
    seen_by_new_thread = []
    thread = threading.Thread(target=lambda: seen_by_new_thread.append(torch.get_num_threads()))
    thread.start()
    thread.join()

    assert torch.get_num_threads() == before
    assert seen_by_new_thread == [before]


def test_prefetch_producer_runs_single_threaded() -> None:
    # The producer's count must hold even when its torch work starts after the consumer has restored its own.
    before = torch.get_num_threads()
    if before < 2:
        pytest.skip("torch runs one thread here, so a single-threaded producer is not observable")
    consumer_restored = threading.Event()

    def source():
        yield None
        consumer_restored.wait(timeout=10)
        yield torch.get_num_threads()

    items = data_module._prefetch(source(), depth=2)
    assert next(items) is None
    consumer_restored.set()

    assert next(items) == 1
    assert torch.get_num_threads() == before


def test_prefetch_off_gives_same_batches(image_root, tmp_path) -> None:
    data = prepare_data(_settings(image_root, tmp_path))
    with_thread = BatchLoader(data.train, 4, train=True, image_size=IMAGE_SIZE, prefetch=True)
    without = BatchLoader(data.train, 4, train=True, image_size=IMAGE_SIZE, prefetch=False)

    for (first, first_labels), (second, second_labels) in zip(with_thread, without, strict=True):
        assert torch.equal(first, second)
        assert torch.equal(first_labels, second_labels)


@pytest.mark.parametrize(
    ("device", "threads", "processes", "expected"),
    [("cpu", 4, 1, False), ("cpu", 2, 1, True), ("cpu", 2, 2, False), ("cuda", 4, 1, True), ("cuda", 4, 4, True)],
)
def test_prefetch_thread_needs_free_core(monkeypatch, device: str, threads: int, processes: int,
                                         expected: bool) -> None:
    monkeypatch.setattr(data_module, "usable_cores", lambda: 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)

    assert data_module.prefetch_in_thread(torch.device(device), processes) is expected


@pytest.mark.parametrize(("free_bytes", "expected"), [(10 * 2**20, 0), (2**30, 2), (None, 2)])
def test_loader_workers_shared_memory(monkeypatch, caplog, free_bytes, expected: int) -> None:
    monkeypatch.setattr(data_module, "shared_memory_free_bytes", lambda: free_bytes)

    with caplog.at_level(logging.WARNING, logger="dogbreeds.data"):
        workers = loader_workers(2)

    assert workers == expected
    assert ("/dev/shm" in caplog.text) == (expected == 0)


def test_loader_workers_default_and_zero(monkeypatch) -> None:
    monkeypatch.setattr(data_module, "shared_memory_free_bytes", lambda: 2**30)

    assert loader_workers(0) == 0
    assert 1 <= loader_workers(None) <= 4
    with pytest.raises(ValueError, match="workers"):
        loader_workers(-1)


def test_max_images_cap_stratified(image_root, tmp_path) -> None:
    data = prepare_data(_settings(image_root, tmp_path, max_images=9))

    assert len(data.train) + len(data.val) == 9
    assert set(data.train.labels) == {0, 1, 2}
    assert "Capped at 9 of 21 images" in data.description
    assert data.cache.count == 9


def test_stratified_sample_shares() -> None:
    labels = [0] * 50 + [1] * 30 + [2] * 20
    rng = np.random.default_rng(0)

    chosen = stratified_sample(labels, 10, rng)

    assert len(chosen) == 10
    assert chosen == sorted(chosen)
    assert [sum(labels[i] == label for i in chosen) for label in range(3)] == [5, 3, 2]


def test_stratified_sample_keeps_rare_labels() -> None:
    labels = [0] * 97 + [1, 2, 3]

    chosen = stratified_sample(labels, 5, np.random.default_rng(1))

    assert len(chosen) == 5
    assert {labels[i] for i in chosen} == {0, 1, 2, 3}


def test_stratified_sample_budget_below_labels() -> None:
    labels = [0] * 5 + [1] * 3 + [2] * 1

    chosen = stratified_sample(labels, 2, np.random.default_rng(2))

    assert sorted(labels[i] for i in chosen) == [0, 1]


def test_test_folder_is_validation(image_root, tmp_path) -> None:
    test_root = tmp_path / "test"
    imagegen.make_class_tree(test_root, {"n02085936-Maltese_dog": 2, "n02086079-Pekinese": 3}, size=(20, 20))

    data = prepare_data(_settings(image_root, tmp_path, test_dir=test_root))

    assert len(data.train) == sum(CLASSES.values())
    assert len(data.val) == 5
    assert sorted(set(data.val.labels)) == [1, 2]
    assert all(path.is_relative_to(test_root) for path in data.val.paths)
    assert "test folder" in data.description


def test_same_test_folder_falls_back_to_split(image_root, tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="dogbreeds.data"):
        data = prepare_data(_settings(image_root, tmp_path, test_dir=image_root))

    assert "is the training folder" in caplog.text
    assert len(data.train) + len(data.val) == sum(CLASSES.values())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"val_fraction": 1.0}, "val_fraction"), ({"max_images": 1}, "max_images"), ({"image_size": 0}, "image_size"),
     ({"seed": -1}, "seed")],
)
def test_prepare_data_rejects_settings(image_root, tmp_path, overrides, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prepare_data(_settings(image_root, tmp_path, **overrides))


def test_cli_download_dispatches(monkeypatch) -> None:
    received = []
    fake = types.ModuleType("dogbreeds.download")
    fake.main = lambda argv: received.append(list(argv)) or 0
    monkeypatch.setitem(sys.modules, "dogbreeds.download", fake)

    status = data_module.main(["download", "--dest", "somewhere"])

    assert status == 0
    assert received == [["--dest", "somewhere"]]


def test_cli_prepare_prints_summary(image_root, tmp_path, capsys) -> None:
    status = data_module.main(
        ["prepare", str(image_root), "--image-size", str(IMAGE_SIZE), "--cache-dir", str(tmp_path / "cache"),
         "--workers", "0"]
    )

    output = capsys.readouterr().out
    assert status == 0
    assert "classes: 3" in output
    assert "cache:" in output


@pytest.mark.parametrize("spelling", ["--image_size", "--image-size"])
def test_cli_prepare_option_spellings(tmp_path, capsys, spelling) -> None:
    with pytest.raises(SystemExit) as caught:
        data_module.main(["prepare", "--help"])
    assert caught.value.code == 0
    assert "--image_size PX, --image-size PX" in " ".join(capsys.readouterr().out.split())

    status = data_module.main(["prepare", str(tmp_path / "missing"), spelling, "32", "--no_cache"])
    assert status == 2


def test_cli_prepare_reports_bad_folder(tmp_path, capsys) -> None:
    status = data_module.main(["prepare", str(tmp_path / "missing"), "--no-cache"])

    assert status == 2
    assert "missing" in capsys.readouterr().err
