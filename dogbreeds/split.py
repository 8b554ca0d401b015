"""Divide images into training and validation sets: a stratified seeded split, a test folder, or the official lists.

`stratified_split` keeps byte-identical files on one side, so a photo copied into the folder twice can never
be both trained on and validated on. `match_test_classes` maps a separate test folder onto the training
classes by folder name. `official_split` reads Stanford Dogs' `train_list.mat` / `test_list.mat`.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import math
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dogbreeds.folders import DataFolderError, ImageIndex, class_key_for_matching, find_class_root
from dogbreeds.matfile import MatFileError, cell_strings, load_mat

logger = logging.getLogger(__name__)

TRAIN_LIST_FILE = "train_list.mat"
TEST_LIST_FILE = "test_list.mat"

_HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Split:
    """Positions into a list of images for training and for validation, with a sentence saying how they were chosen."""

    train_indices: list[int]
    val_indices: list[int]
    description: str


def same_folder(a: str | Path, b: str | Path) -> bool:
    """Tell whether two folder arguments name the same images, after unwrapping single-folder wrappers.

    `images` and `images/images/` count as the same folder when the second is the class root of the first.
    """
    first, second = _class_root_or_path(a), _class_root_or_path(b)
    if first.exists() and second.exists():
        return os.path.samefile(first, second)
    return first == second


def _class_root_or_path(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if folder.is_dir():
        try:
            folder = find_class_root(folder)
        except (DataFolderError, OSError):
            pass
    return folder.resolve()


def stratified_split(paths: Sequence[Path], labels: Sequence[int], val_fraction: float, seed: int) -> Split:
    """Split images per class into training and validation, reproducibly for a given `seed`.

    Byte-identical files form one group that goes to one side. In each class with at least two groups,
    round(groups x val_fraction) groups go to validation, clamped so that each side gets at least one.
    A class with a single image goes to training. Raises ValueError for a fraction outside (0, 1) or unequal lengths.
    """
    if len(paths) != len(labels):
        raise ValueError(f"stratified_split got {len(paths)} paths but {len(labels)} labels; pass one label per path.")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(
            f"Validation fraction {val_fraction} is invalid; expected a number between 0 and 1 "
            f"(exclusive), such as 0.2 for 20 %."
        )

    groups = duplicate_groups(paths)
    _warn_cross_class_duplicates(groups, paths, labels)
    groups_by_class: dict[int, list[list[int]]] = defaultdict(list)
    for members in groups:
        groups_by_class[labels[members[0]]].append(members)

    train_indices: list[int] = []
    val_indices: list[int] = []
    single_image_classes = 0
    for label in sorted(groups_by_class):
        class_groups = groups_by_class[label]
        val_count = _validation_group_count(len(class_groups), val_fraction)
        if val_count == 0:
            single_image_classes += 1

        # A string seed is hashed with SHA-512 by `random`, so the order is the same on every platform and run.
        random.Random(f"{seed}:{label}").shuffle(class_groups)
        for position, members in enumerate(class_groups):
            (val_indices if position < val_count else train_indices).extend(members)

    train_indices.sort()
    val_indices.sort()
    description = _describe_stratified(
        len(paths), len(train_indices), len(val_indices), val_fraction, seed,
        duplicates=len(paths) - len(groups), single_image_classes=single_image_classes,
    )
    logger.info("%s", description)
    if not val_indices:
        logger.warning(
            "The validation set is empty because no class has two or more distinct images; "
            "add images or pass a separate test folder."
        )
    return Split(train_indices=train_indices, val_indices=val_indices, description=description)


def _validation_group_count(group_count: int, val_fraction: float) -> int:
    if group_count < 2:
        return 0
    # Round half up, then keep one group on each side: 5 groups at 0.2 give 1, 2 groups at 0.2 give 1.
    rounded = math.floor(group_count * val_fraction + 0.5)
    return min(max(rounded, 1), group_count - 1)


def _describe_stratified(
    total: int, train: int, val: int, val_fraction: float, seed: int, *, duplicates: int, single_image_classes: int
) -> str:
    description = (
        f"Split {total:,} images into {train:,} for training and {val:,} for validation "
        f"(stratified per class, {val_fraction:.0%} validation, seed {seed})."
    )
    if duplicates:
        description += f" {duplicates:,} byte-identical copies were kept on the same side as their original."
    if single_image_classes:
        description += f" {single_image_classes} classes with one image are in training only."
    return description


def duplicate_groups(paths: Sequence[Path]) -> list[list[int]]:
    """Group the positions of byte-identical files, in order of first appearance.

    Only files whose size matches another file's are read and hashed (BLAKE2b), so a folder without
    duplicates costs one `stat` per file. A file that cannot be read forms its own group.
    """
    positions_by_size: dict[int, list[int]] = defaultdict(list)
    unreadable: list[int] = []
    for position, path in enumerate(paths):
        try:
            positions_by_size[os.stat(path).st_size].append(position)
        except OSError:
            unreadable.append(position)

    # Positions were appended in increasing order, so every group is already sorted.
    groups: list[list[int]] = [[position] for position in unreadable]
    for same_size in positions_by_size.values():
        if len(same_size) == 1:
            groups.append(same_size)
            continue
        by_digest: dict[bytes, list[int]] = defaultdict(list)
        for position in same_size:
            digest = _file_digest(paths[position])
            if digest is None:
                groups.append([position])
            else:
                by_digest[digest].append(position)
        groups.extend(by_digest.values())
    return sorted(groups, key=lambda members: members[0])


def _file_digest(path: Path) -> bytes | None:
    digest = hashlib.blake2b(digest_size=20)
    try:
        with open(path, "rb") as stream:
            while chunk := stream.read(_HASH_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as error:
        logger.debug("Cannot hash '%s' to find duplicates: %s", path, error)
        return None
    return digest.digest()


def _warn_cross_class_duplicates(groups: list[list[int]], paths: Sequence[Path], labels: Sequence[int]) -> None:
    mixed = [members for members in groups if len({labels[position] for position in members}) > 1]
    if not mixed:
        return
    example = mixed[0]
    logger.warning(
        "%d groups of byte-identical files are in more than one class, for example '%s' and '%s'. "
        "Each group is split as a unit; remove the wrong copies for cleaner labels.",
        len(mixed), paths[example[0]], paths[example[1]],
    )


def match_test_classes(train: ImageIndex, test: ImageIndex) -> ImageIndex:
    """Relabel a test index with the training class numbers, matching classes by folder name.

    The result has the training class keys and names. Raises DataFolderError naming each test class that
    training does not have; a training class missing from the test folder only logs a warning.
    """
    # Keys are compared in NFC form, so a test folder copied from macOS (NFD names) still matches.
    train_label = {class_key_for_matching(key): label for label, key in enumerate(train.class_keys)}
    unknown = [key for key in test.class_keys if class_key_for_matching(key) not in train_label]
    if unknown:
        raise DataFolderError(_unknown_classes_message(train, test, unknown))

    present = {class_key_for_matching(key) for key in test.class_keys}
    missing = [key for key in train.class_keys if class_key_for_matching(key) not in present]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        logger.warning(
            "Test folder '%s' has no images for %d of the %d training classes (%s); "
            "they are left out of the test accuracy.",
            test.root, len(missing), len(train.class_keys), shown,
        )

    labels = [train_label[class_key_for_matching(test.class_keys[label])] for label in test.labels]
    return ImageIndex(
        root=test.root,
        class_keys=list(train.class_keys),
        class_names=list(train.class_names),
        paths=list(test.paths),
        labels=labels,
    )


def _unknown_classes_message(train: ImageIndex, test: ImageIndex, unknown: list[str]) -> str:
    lines = []
    for key in unknown[:10]:
        close = difflib.get_close_matches(key, train.class_keys, n=1)
        lines.append(f"  '{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    if len(unknown) > 10:
        lines.append(f"  ... and {len(unknown) - 10} more")
    return (
        f"Test folder '{test.root}' has {len(unknown)} classes that the training folder '{train.root}' "
        f"does not have:\n" + "\n".join(lines) + "\n"
        f"Test class folders must use the training folder names. Rename or remove those folders, "
        f"or train on a folder that includes them."
    )


def official_split(index: ImageIndex, lists_dir: Path) -> Split:
    """Split `index` by Stanford Dogs' official `train_list.mat` and `test_list.mat` from `lists_dir`.

    The test list becomes the validation side. List entries are paths relative to the class root, such as
    'n02085620-Chihuahua/n02085620_5927.jpg'. Images in neither list are left out, and listed files that
    the index lacks are counted in a warning. Raises FileNotFoundError for a missing list file,
    MatFileError for an unreadable one, and DataFolderError when a list matches none of the images.
    """
    lists_dir = Path(lists_dir).expanduser()
    if lists_dir.is_file():
        lists_dir = lists_dir.parent
    train_files = read_file_list(lists_dir / TRAIN_LIST_FILE)
    test_files = read_file_list(lists_dir / TEST_LIST_FILE)

    position_of = {path.relative_to(index.root).as_posix(): position for position, path in enumerate(index.paths)}
    train_indices, train_missing = _positions_of(train_files, position_of)
    val_indices, test_missing = _positions_of(test_files, position_of)
    checks = ((TRAIN_LIST_FILE, train_indices, train_files), (TEST_LIST_FILE, val_indices, test_files))
    for name, indices, files in checks:
        if not indices:
            raise DataFolderError(
                f"None of the {len(files):,} files in '{lists_dir / name}' is among the {len(index):,} images "
                f"under '{index.root}'. Expected entries relative to that folder, such as "
                f"'{next(iter(position_of), 'n02085620-Chihuahua/n02085620_5927.jpg')}'; the list has "
                f"'{files[0] if files else '(nothing)'}'. Pass the class root that the lists were made for."
            )

    overlap = set(train_indices) & set(val_indices)
    if overlap:
        example = index.paths[min(overlap)]
        raise DataFolderError(
            f"{len(overlap)} images are in both '{TRAIN_LIST_FILE}' and '{TEST_LIST_FILE}' in '{lists_dir}', "
            f"for example '{example}'. The lists must not overlap; restore the original list files."
        )

    missing = train_missing + test_missing
    if missing:
        logger.warning(
            "%d files named in the split lists are not among the images under '%s' (for example '%s'); "
            "they were removed as unreadable or are absent.",
            len(missing), index.root, missing[0],
        )
    unlisted = len(index) - len(train_indices) - len(val_indices)
    if unlisted:
        logger.warning("%d images under '%s' are in neither split list and are left out.", unlisted, index.root)

    description = (
        f"Official Stanford Dogs split from '{lists_dir}': {len(train_indices):,} training and "
        f"{len(val_indices):,} test images; the test images are the validation set."
    )
    logger.info("%s", description)
    return Split(train_indices=sorted(train_indices), val_indices=sorted(val_indices), description=description)


def read_file_list(path: Path) -> list[str]:
    """Read the `file_list` cell array of a Stanford Dogs list file as relative paths with '/' separators."""
    if not path.is_file():
        raise FileNotFoundError(
            f"Split list '{path}' was not found. Expected '{TRAIN_LIST_FILE}' and '{TEST_LIST_FILE}' from "
            f"Stanford Dogs' lists.tar in that folder; run: python -m dogbreeds.data download"
        )
    variables = load_mat(path, ["file_list"])
    if "file_list" not in variables:
        raise MatFileError(f"'{path}' has no variable 'file_list'; expected a Stanford Dogs split list.")
    return [entry.strip().replace("\\", "/") for entry in cell_strings(variables["file_list"])]


def _positions_of(files: list[str], position_of: dict[str, int]) -> tuple[list[int], list[str]]:
    found, missing = [], []
    for name in files:
        position = position_of.get(name)
        if position is None:
            missing.append(name)
        else:
            found.append(position)
    return found, missing
