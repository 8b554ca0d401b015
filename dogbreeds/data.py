"""Data preparation and batch loading: scan, split, check and cache the images, then iterate batches.

``prepare_data`` turns the settings into a ``PreparedData`` with a training and a validation ``ImageSet``, and
``BatchLoader`` iterates one of them as (float32 images, int64 labels) batches. With the cache on, batches are read
from the decoded uint8 cache (``dogbreeds.cache``) and augmented in this process. With the cache off,
``torch.utils.data.DataLoader`` worker processes decode the images.

Command line: ``python -m dogbreeds.data download [--dest DIR]`` downloads Stanford Dogs, and
``python -m dogbreeds.data prepare DATA_DIR`` checks and caches a folder of images ahead of training.
"""

from __future__ import annotations

import argparse
import logging
import math
import queue
import shutil
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dogbreeds import split as splitting
from dogbreeds.cache import (
    CacheError,
    ImageCache,
    ProgressCallback,
    default_workers,
    load_or_build_cache,
    usable_cores,
    validate_images,
)
from dogbreeds.cli import EXIT_CODES_EPILOG, EXIT_FAILURE, EXIT_USAGE, SPELLING_EPILOG, add_option
from dogbreeds.decode import ImageDecodeError, load_rgb
from dogbreeds.folders import ImageIndex, drop_unreadable, scan_image_folder
from dogbreeds.transforms import BatchAugment, center_crop, fit_square, normalize, resize_size

logger = logging.getLogger(__name__)

# DataLoader workers pass every batch through shared memory. Below this much free space in /dev/shm (Docker's
# default is 64 MB) they fail with "bus error" mid-epoch, so the loader decodes in the main process instead.
MIN_SHARED_MEMORY_BYTES = 256 * 2**20


@dataclass
class DataSettings:
    """Image folders and the options for splitting, checking and caching their images."""

    train_dir: Path
    test_dir: Path | None = None
    image_size: int = 64
    val_fraction: float = 0.2
    seed: int = 0
    use_cache: bool = True
    cache_dir: Path = Path(".cache/dogbreeds")
    workers: int | None = None  # decoding processes for the cache build or check; None: CPU cores, at most 4
    split_lists: Path | None = None  # folder with train_list.mat / test_list.mat (the official Stanford Dogs split)
    max_images: int | None = None  # stratified cap on the images used, train and validation together
    min_scale: float = 0.25
    hflip: bool = True


@dataclass
class ImageSet:
    """Image files with their labels and, when the cache is on, the cache and each file's row in it."""

    paths: list[Path]
    labels: list[int]
    side: int  # side of the uint8 square each image is reduced to, resize_size(image_size)
    cache: ImageCache | None = None
    rows: list[int] | None = None  # row of paths[i] in the cache

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError(f"ImageSet got {len(self.paths)} paths but {len(self.labels)} labels; pass one per path")
        if self.cache is not None and (self.rows is None or len(self.rows) != len(self.paths)):
            raise ValueError("ImageSet with a cache needs one cache row per path in rows")

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class PreparedData:
    """Class names and the two image sets of a run, with a sentence on how they were made."""

    class_keys: list[str]
    class_names: list[str]
    train: ImageSet
    val: ImageSet
    description: str
    cache: ImageCache | None = None


def prepare_data(settings: DataSettings, *, progress: ProgressCallback | None = None) -> PreparedData:
    """Scan, split, cap, check and cache the images described by ``settings``.

    Every selected file is decoded once: into the cache when it is on, or in a validation pass when it is off.
    Files that fail are skipped with a warning each and excluded from both sets. ``progress(done, total)`` is
    called as files are decoded. Raises the folder errors of ``folders.scan_image_folder`` and ValueError for
    invalid settings.
    """
    _check_settings(settings)
    side = resize_size(settings.image_size)

    train_index, val_index, description = _split(settings)
    train_index, val_index, description = _cap(train_index, val_index, description, settings)

    all_paths = list(dict.fromkeys([*train_index.paths, *val_index.paths]))
    cache, errors = _decode_all(all_paths, side, settings, progress)
    train_index, val_index = _drop_failed(train_index, val_index, all_paths, errors)
    unreadable = sum(error is not None for error in errors)
    if unreadable:
        description = f"{description} Skipped {unreadable:,} unreadable files."

    if not train_index.paths:
        raise ValueError(
            f"No training images are left in {settings.train_dir} after the split and the decode check. "
            "Add images or lower val_fraction."
        )
    missing = sorted(set(range(len(train_index.class_keys))) - set(train_index.labels))
    if missing:
        logger.warning(
            "%d classes have no training images: %s",
            len(missing), ", ".join(train_index.class_keys[i] for i in missing),
        )

    logger.info(
        "Prepared %d training and %d validation images in %d classes",
        len(train_index), len(val_index), len(train_index.class_keys),
    )
    row_of = {path: row for row, path in enumerate(all_paths)}
    return PreparedData(
        class_keys=list(train_index.class_keys),
        class_names=list(train_index.class_names),
        train=_image_set(train_index, side, cache, row_of),
        val=_image_set(val_index, side, cache, row_of),
        description=description,
        cache=cache,
    )


def _check_settings(settings: DataSettings) -> None:
    resize_size(settings.image_size)
    if not 0.0 < settings.val_fraction < 1.0 and settings.test_dir is None and settings.split_lists is None:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), found {settings.val_fraction}")
    if settings.max_images is not None and settings.max_images < 2:
        raise ValueError(f"max_images must be at least 2 or None for no cap, found {settings.max_images}")
    if settings.seed < 0:
        raise ValueError(f"seed must be 0 or more, found {settings.seed}")


def _split(settings: DataSettings) -> tuple[ImageIndex, ImageIndex, str]:
    """Scan the folders and return the (training, validation) indexes with the split's description."""
    train_folder = scan_image_folder(settings.train_dir)

    test_dir = settings.test_dir
    if test_dir is not None and splitting.same_folder(Path(settings.train_dir), Path(test_dir)):
        logger.warning(
            "The test folder %s is the training folder, so a validation split of it is used instead", test_dir
        )
        test_dir = None

    if test_dir is not None:
        test_folder = splitting.match_test_classes(train_folder, scan_image_folder(test_dir))
        description = (
            f"Trained on {len(train_folder):,} images from '{train_folder.root}' and validated on "
            f"{len(test_folder):,} images from the test folder '{test_folder.root}'."
        )
        logger.info("%s", description)
        return train_folder, test_folder, description

    if settings.split_lists is not None:
        split = splitting.official_split(train_folder, Path(settings.split_lists))
    else:
        split = splitting.stratified_split(
            train_folder.paths, train_folder.labels, settings.val_fraction, settings.seed
        )
    return _subset(train_folder, split.train_indices), _subset(train_folder, split.val_indices), split.description


def _subset(index: ImageIndex, positions: Sequence[int]) -> ImageIndex:
    return ImageIndex(
        root=index.root,
        class_keys=list(index.class_keys),
        class_names=list(index.class_names),
        paths=[index.paths[i] for i in positions],
        labels=[index.labels[i] for i in positions],
    )


def _cap(
    train_index: ImageIndex, val_index: ImageIndex, description: str, settings: DataSettings
) -> tuple[ImageIndex, ImageIndex, str]:
    """Subsample both sides per class to ``max_images`` in total, keeping the train/validation proportion."""
    total = len(train_index) + len(val_index)
    if settings.max_images is None or total <= settings.max_images:
        return train_index, val_index, description

    train_budget = round(settings.max_images * len(train_index) / total)
    val_budget = settings.max_images - train_budget
    rng = np.random.default_rng([settings.seed, 7])
    train_index = _subset(train_index, stratified_sample(train_index.labels, train_budget, rng))
    val_index = _subset(val_index, stratified_sample(val_index.labels, val_budget, rng))

    cap_text = (
        f"Capped at {settings.max_images:,} of {total:,} images: {len(train_index):,} training and "
        f"{len(val_index):,} validation images, sampled per class."
    )
    logger.info("%s", cap_text)
    capped = f"{description} {cap_text}"
    return train_index, val_index, capped


def stratified_sample(labels: Sequence[int], budget: int, rng: np.random.Generator) -> list[int]:
    """Pick ``budget`` positions so that every label keeps about its share; return them in the original order.

    Shares are rounded by the largest-remainder method, and every label keeps at least one position. When the
    budget is smaller than the number of labels, the most common labels get one position each.
    """
    positions_by_label: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        positions_by_label.setdefault(label, []).append(position)
    if budget >= len(labels):
        return list(range(len(labels)))
    if budget <= 0:
        return []

    if budget < len(positions_by_label):
        most_common = sorted(positions_by_label, key=lambda label: (-len(positions_by_label[label]), label))
        counts = {label: int(rank < budget) for rank, label in enumerate(most_common)}
    else:
        counts = _largest_remainder_counts(positions_by_label, budget, len(labels))

    chosen: list[int] = []
    for label, members in positions_by_label.items():
        chosen.extend(rng.choice(members, size=counts[label], replace=False).tolist())
    return sorted(chosen)


def _largest_remainder_counts(positions_by_label: dict[int, list[int]], budget: int, total: int) -> dict[int, int]:
    """Return per label max(1, its share of ``budget``), rounded so the counts add up to ``budget`` exactly."""
    quotas = {label: len(members) * budget / total for label, members in positions_by_label.items()}
    counts = {label: max(1, math.floor(quota)) for label, quota in quotas.items()}

    # The minimum of one can push the total over the budget: take the excess from the labels furthest above quota.
    while sum(counts.values()) > budget:
        above = max((label for label in counts if counts[label] > 1), key=lambda label: counts[label] - quotas[label])
        counts[above] -= 1

    # Each floor loses less than one, so one pass over the labels furthest below quota fills the budget.
    for label in sorted(quotas, key=lambda label: counts[label] - quotas[label]):
        if sum(counts.values()) >= budget:
            break
        if counts[label] < len(positions_by_label[label]):
            counts[label] += 1
    return counts


def _decode_all(
    paths: list[Path], side: int, settings: DataSettings, progress: ProgressCallback | None
) -> tuple[ImageCache | None, list[str | None]]:
    """Decode every file once, into the cache or as a check; return the cache (or None) and per-file errors."""
    if settings.use_cache:
        try:
            cache = load_or_build_cache(
                paths, side, Path(settings.cache_dir), workers=settings.workers, progress=progress
            )
        except CacheError as error:
            logger.warning("Continuing without the image cache: %s", error)
        else:
            return cache, [cache.errors.get(row) for row in range(cache.count)]

    return None, validate_images(paths, side, workers=settings.workers, progress=progress)


def _drop_failed(
    train_index: ImageIndex, val_index: ImageIndex, all_paths: list[Path], errors: list[str | None]
) -> tuple[ImageIndex, ImageIndex]:
    """Remove the files that failed to decode from both indexes, warning once per file and once in total."""
    if not any(errors):
        return train_index, val_index

    label_of = dict(zip(train_index.paths, train_index.labels))
    label_of.update(zip(val_index.paths, val_index.labels))
    combined = ImageIndex(
        root=train_index.root,
        class_keys=list(train_index.class_keys),
        class_names=list(train_index.class_names),
        paths=all_paths,
        labels=[label_of[path] for path in all_paths],
    )
    readable = [error is None for error in errors]
    kept = set(drop_unreadable(combined, readable, reasons=errors, keep_classes=True).paths)

    def keep(index: ImageIndex) -> ImageIndex:
        return _subset(index, [i for i, path in enumerate(index.paths) if path in kept])

    return keep(train_index), keep(val_index)


def _image_set(index: ImageIndex, side: int, cache: ImageCache | None, row_of: dict[Path, int]) -> ImageSet:
    rows = [row_of[path] for path in index.paths] if cache is not None else None
    return ImageSet(paths=list(index.paths), labels=list(index.labels), side=side, cache=cache, rows=rows)


def shared_memory_free_bytes() -> int | None:
    """Return the free bytes in /dev/shm, or None where it does not exist (macOS, Windows)."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return None
    try:
        return shutil.disk_usage(shm).free
    except OSError:
        return None


def loader_workers(requested: int | None) -> int:
    """Return how many DataLoader worker processes to use: the request, or 0 when shared memory is too small."""
    workers = default_workers() if requested is None else int(requested)
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, found {requested}")
    if workers == 0:
        return 0

    free = shared_memory_free_bytes()
    if free is not None and free < MIN_SHARED_MEMORY_BYTES:
        logger.warning(
            "Loading images in the main process instead of %d workers: /dev/shm has %.0f MB free, below %.0f MB. "
            "Give the container more shared memory (docker run --shm-size=1g) to use workers.",
            workers, free / 2**20, MIN_SHARED_MEMORY_BYTES / 2**20,
        )
        return 0
    return workers


def prefetch_in_thread(device: torch.device, processes: int = 1) -> bool:
    """Return whether a background thread should build the next batch while the model trains on ``device``.

    The thread overlaps with the step only where a core is free for it. On a GPU the CPU mostly waits for the
    kernels. On the CPU, torch's threads in the ``processes`` training processes on this machine usually occupy
    every usable core. The producer thread then preempts one of them, and the others wait for it at the next
    barrier. On 2 cores the thread cost custom_cnn and resfcn18 about 7 % of their speed, and building each
    batch in the training thread between steps 0-4 %.
    """
    if device.type != "cpu":
        return True
    return torch.get_num_threads() * max(1, processes) < usable_cores()


class BatchLoader:
    """Batches of (float32 [N, 3, S, S] normalized images, int64 [N] labels) from an ImageSet.

    ``train=True`` shuffles anew for every (seed, epoch), where ``set_epoch`` selects the epoch, and applies random
    resized crops and flips. A lone last sample joins the previous batch, so no batch has one sample, and a shard
    smaller than ``batch_size`` is one batch. Each rank takes an equal, disjoint share of the shuffled samples. The
    few samples that do not divide evenly between ranks are left out of that epoch only.

    ``train=False`` yields the samples in order, each exactly once across ranks (rank r takes the r-th contiguous
    block), with the same values as ``transforms.preprocess_eval`` gives for the file.

    ``workers`` sets the decoding processes when the set has no cache (the cache needs none). ``prefetch`` builds
    the next batch in a background thread while the caller works on the current one, which pays off where a core
    is free for it (see ``prefetch_in_thread``). ``with_indices`` adds a third item, the int64 positions of the
    batch's samples in ``images``.
    """

    def __init__(
        self,
        images: ImageSet,
        batch_size: int,
        *,
        train: bool,
        image_size: int,
        seed: int = 0,
        min_scale: float = 0.25,
        hflip: bool = True,
        rank: int = 0,
        world_size: int = 1,
        workers: int | None = None,
        prefetch: bool = True,
        with_indices: bool = False,
        mp_context: str | None = None,
    ) -> None:
        _check_loader_arguments(images, batch_size, train, image_size, seed, rank, world_size)
        self.images = images
        self.batch_size = int(batch_size)
        self.train = train
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.prefetch = prefetch
        self.with_indices = with_indices
        self.epoch = 0
        self.augment = BatchAugment(image_size, min_scale=min_scale, hflip=hflip) if train else None

        self._labels = torch.as_tensor(images.labels, dtype=torch.int64)
        self._rows = np.asarray(images.rows, dtype=np.int64) if images.cache is not None else None
        self._workers = workers
        self._mp_context = mp_context
        self._data_loader: DataLoader | None = None
        self._sampler = _EpochBatchSampler()
        self._reported_failures: set[int] = set()

        if train and self.shard_size < 2:
            raise ValueError(
                f"Training needs at least 2 images per process, found {len(images)} images for "
                f"{self.world_size} processes. Add images or train with fewer processes."
            )

    @property
    def shard_size(self) -> int:
        """Samples this rank visits per epoch."""
        count = len(self.images)
        if self.train:
            return count // self.world_size
        return len(np.array_split(np.arange(count), self.world_size)[self.rank])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle order and augmentation the next iteration uses."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        size = self.shard_size
        if size == 0:
            return 0
        if not self.train:
            return math.ceil(size / self.batch_size)
        if size <= self.batch_size:
            return 1
        return size // self.batch_size + (1 if size % self.batch_size > 1 else 0)

    def epoch_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """Return the sample positions of every batch this rank yields in ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        count = len(self.images)
        if not self.train:
            shard = np.array_split(np.arange(count, dtype=np.int64), self.world_size)[self.rank]
            return [shard[start : start + self.batch_size] for start in range(0, len(shard), self.batch_size)]

        # Every rank draws the same permutation and takes its own contiguous block of it.
        order = np.random.default_rng([self.seed, epoch]).permutation(count)
        size = self.shard_size
        shard = order[self.rank * size : (self.rank + 1) * size]
        return _training_batches(shard, self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        batches = self.epoch_batches()
        generator = torch.Generator().manual_seed(_augment_seed(self.seed, self.epoch, self.rank))
        if self.images.cache is not None:
            source = self._cached_batches(batches, generator)
        else:
            # The DataLoader iterator is created here, in the caller's thread, so that its worker processes are
            # started (forked, on Linux) from the main thread rather than from the prefetch thread.
            self._sampler.batches = batches
            source = self._decoded_batches(iter(self._get_data_loader()), generator)

        if self.prefetch:
            return _prefetch(source, depth=2)
        return source

    def _cached_batches(
        self, batches: list[np.ndarray], generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        cache = self.images.cache
        for positions in batches:
            pixels = cache.read(self._rows[positions])
            yield self._finish(pixels, torch.from_numpy(positions), generator)

    def _decoded_batches(
        self, decoded: Iterator[tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]], generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        for pixels, positions, failures in decoded:
            self._report(failures)
            minimum = 2 if self.train else 1
            if len(positions) < minimum:
                continue
            yield self._finish(pixels, positions, generator)

    def _finish(
        self, pixels: torch.Tensor, positions: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        """Turn a uint8 batch into the model input and attach labels (and positions)."""
        if self.augment is not None:
            images = self.augment(pixels, generator)
        else:
            images = normalize(center_crop(pixels, self.image_size))
        labels = self._labels[positions]
        if self.with_indices:
            return images, labels, positions
        return images, labels

    def _get_data_loader(self) -> DataLoader:
        if self._data_loader is None:
            workers = loader_workers(self._workers)
            dataset = _DecodedImages([str(path) for path in self.images.paths], self.images.side)
            self._data_loader = DataLoader(
                dataset,
                batch_sampler=self._sampler,
                num_workers=workers,
                collate_fn=_collate_decoded,
                persistent_workers=workers > 0,
                multiprocessing_context=self._mp_context if workers > 0 else None,
            )
        return self._data_loader

    def _report(self, failures: list[tuple[int, str]]) -> None:
        for position, error in failures:
            if position in self._reported_failures:
                continue
            self._reported_failures.add(position)
            logger.warning("Skipping image %s, which no longer decodes: %s", self.images.paths[position], error)


def _check_loader_arguments(
    images: ImageSet, batch_size: int, train: bool, image_size: int, seed: int, rank: int, world_size: int
) -> None:
    minimum_batch = 2 if train else 1
    if batch_size < minimum_batch:
        raise ValueError(
            f"batch_size must be at least {minimum_batch} for {'training' if train else 'evaluation'}, "
            f"found {batch_size}; batch normalization needs two or more samples per training batch"
        )
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"rank must be in [0, world_size) and world_size at least 1, found rank {rank} of {world_size}"
        )
    if seed < 0:
        raise ValueError(f"seed must be 0 or more, found {seed}")

    side = resize_size(image_size)
    if images.side != side:
        raise ValueError(
            f"The image set was prepared for {images.side} px squares, but image_size {image_size} needs {side} px. "
            f"Prepare the data with image_size={image_size}."
        )


def _training_batches(shard: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Cut a shuffled shard into batches, shrinking to the shard and folding a lone last sample into its neighbour."""
    if len(shard) <= batch_size:
        return [shard]
    full, remainder = divmod(len(shard), batch_size)
    batches = [shard[i * batch_size : (i + 1) * batch_size] for i in range(full)]
    if remainder == 1:
        batches[-1] = shard[(full - 1) * batch_size :]
    elif remainder > 1:
        batches.append(shard[full * batch_size :])
    return batches


def _augment_seed(seed: int, epoch: int, rank: int) -> int:
    state = np.random.SeedSequence([seed, epoch, rank, 1]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & (2**63 - 1)


class _EpochBatchSampler:
    """Batch sampler whose batches the BatchLoader swaps each epoch, so persistent DataLoader workers are reused."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield batch.tolist()

    def __len__(self) -> int:
        return len(self.batches)


class _DecodedImages(Dataset):
    """Files decoded on demand into uint8 [side, side, 3] arrays; picklable (strings and an int only)."""

    def __init__(self, paths: list[str], side: int) -> None:
        self.paths = paths
        self.side = side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            square = fit_square(load_rgb(self.paths[position], min_side=self.side), self.side)
        except ImageDecodeError as error:
            return position, None, str(error)
        return position, square, None


def _collate_decoded(
    samples: list[tuple[int, np.ndarray | None, str | None]],
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
    """Stack the decoded samples; return (uint8 pixels, int64 positions, [(position, error)] of failed ones).

    The pixels are [N, 3, side, side] in torch.channels_last memory format, the layout of the cache's batches.
    """
    decoded = [(position, pixels) for position, pixels, _ in samples if pixels is not None]
    failures = [(position, error) for position, pixels, error in samples if pixels is None]
    if not decoded:
        return torch.empty((0, 3, 1, 1), dtype=torch.uint8), torch.empty(0, dtype=torch.int64), failures
    pixels = torch.from_numpy(np.stack([array for _, array in decoded])).permute(0, 3, 1, 2)
    positions = torch.tensor([position for position, _ in decoded], dtype=torch.int64)
    return pixels, positions, failures


class _PrefetchError:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


def _prefetch(source: Iterator[Any], depth: int) -> Iterator[Any]:
    """Run ``source`` in a background thread, ``depth`` items ahead of the consumer; re-raise its errors here.

    Torch and Pillow release the GIL in their heavy operations, so the next batch is built while the caller's
    training step runs. Stopping early (break, an exception) stops the thread before this generator closes.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    # The producer runs torch on one thread: its own OpenMP team would spin on the cores the training step needs
    # (18 % of resfcn18's speed on 2 cores). A thread adopts the process default at its first parallel operation,
    # so the producer adopts 1 at once, before the consumer restores its own count and with it the default.
    threads = torch.get_num_threads()
    single_threaded = threading.Event()

    def produce() -> None:
        torch.set_num_threads(1)
        torch.get_num_threads()
        single_threaded.set()
        try:
            for item in source:
                if not put(item):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer thread, which re-raises it
            put(_PrefetchError(error))
            return
        finally:
            close = getattr(source, "close", None)
            if close is not None and stop.is_set():
                close()
        put(_END)

    thread = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    thread.start()
    single_threaded.wait()
    torch.set_num_threads(threads)
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, _PrefetchError):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m dogbreeds.data``: ``download`` Stanford Dogs, or ``prepare`` (check and cache) a folder."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] == "download":
        from dogbreeds.download import main as download_main

        return download_main(arguments[1:])

    options = _build_parser().parse_args(arguments)
    return _run_prepare(options)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds.data", description="Download, check and cache the dog photos."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "download",
        help="download and extract the Stanford Dogs images (see: python -m dogbreeds.data download --help)",
        add_help=False,
    )

    prepare = commands.add_parser("prepare", help="scan, split, check and cache a folder of class folders",
                                  epilog=f"{SPELLING_EPILOG} {EXIT_CODES_EPILOG}")
    defaults = DataSettings(train_dir=Path("."))
    prepare.add_argument("train_dir", type=Path, metavar="DIR", help="folder with one sub-folder of images per class")
    add_option(prepare, "test_dir", type=Path, default=None, metavar="DIR",
               help="separate folder of test images, used for validation (default: a split of DIR)")
    add_option(prepare, "image_size", type=int, default=defaults.image_size, metavar="PX",
               help=f"model input side in pixels (default: {defaults.image_size})")
    add_option(prepare, "val_fraction", type=float, default=defaults.val_fraction, metavar="F",
               help=f"share of images held out for validation (default: {defaults.val_fraction})")
    add_option(prepare, "seed", type=int, default=defaults.seed, metavar="N",
               help=f"seed of the split (default: {defaults.seed})")
    add_option(prepare, "cache_dir", type=Path, default=defaults.cache_dir, metavar="DIR",
               help=f"folder for the image cache (default: {defaults.cache_dir})")
    add_option(prepare, "no_cache", action="store_true", default=False,
               help="only check that every image decodes")
    add_option(prepare, "workers", type=int, default=None, metavar="N",
               help="decoding processes (default: CPU cores, at most 4)")
    add_option(prepare, "split_lists", type=Path, default=None, metavar="DIR",
               help="folder with train_list.mat and test_list.mat (default: a random split)")
    add_option(prepare, "max_images", type=int, default=None, metavar="N",
               help="use at most this many images, a stratified sample (default: all)")
    return parser


def _run_prepare(options: argparse.Namespace) -> int:
    from dogbreeds.runtime import setup_logging

    setup_logging()
    settings = DataSettings(
        train_dir=options.train_dir,
        test_dir=options.test_dir,
        image_size=options.image_size,
        val_fraction=options.val_fraction,
        seed=options.seed,
        use_cache=not options.no_cache,
        cache_dir=options.cache_dir,
        workers=options.workers,
        split_lists=options.split_lists,
        max_images=options.max_images,
    )
    try:
        data = prepare_data(settings)
    except (OSError, ValueError) as error:
        # Folder, split-list and settings errors already name the value and the fix, so no traceback is needed.
        # A missing folder named on the command line is a usage error; anything else failed while running.
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE if isinstance(error, FileNotFoundError) else EXIT_FAILURE
    print(data.description)
    print(f"classes: {len(data.class_keys)}, training images: {len(data.train)}, validation images: {len(data.val)}")
    if data.cache is not None:
        print(f"cache: {data.cache.data_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
