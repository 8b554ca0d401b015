"""Tests for the stratified split, test-folder class matching and the official Stanford Dogs lists."""

from __future__ import annotations

import logging
import shutil
import unicodedata
from pathlib import Path

import imagegen
import pytest
from _data_a_helpers import (
    SCIPY_TRAIN_FILES,
    SCIPY_TRAIN_LIST_COMPRESSED,
    MatlabStyleWriter,
    write_split_lists,
)

from dogbreeds.folders import DataFolderError, scan_image_folder
from dogbreeds.matfile import MatFileError
from dogbreeds.split import (
    Split,
    duplicate_groups,
    match_test_classes,
    official_split,
    same_folder,
    stratified_split,
)

CHIHUAHUA = "n02085620-Chihuahua"
MALTESE = "n02085936-Maltese_dog"
PEKINESE = "n02086079-Pekinese"


def _split_tree(
    tmp_path: Path, classes: dict[str, int], val_fraction: float = 0.2, seed: int = 0
) -> tuple[Split, list[int]]:
    imagegen.make_class_tree(tmp_path, classes)
    index = scan_image_folder(tmp_path)
    return stratified_split(index.paths, index.labels, val_fraction, seed), index.labels


def _per_class(indices: list[int], labels: list[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for position in indices:
        counts[labels[position]] = counts.get(labels[position], 0) + 1
    return counts


def test_split_is_partition(tmp_path: Path) -> None:
    split, labels = _split_tree(tmp_path, {CHIHUAHUA: 10, MALTESE: 7, PEKINESE: 3})

    assert sorted(split.train_indices + split.val_indices) == list(range(20))
    assert not set(split.train_indices) & set(split.val_indices)
    assert split.train_indices == sorted(split.train_indices)
    assert split.val_indices == sorted(split.val_indices)


def test_split_counts_per_class(tmp_path: Path) -> None:
    split, labels = _split_tree(tmp_path, {CHIHUAHUA: 10, MALTESE: 5, PEKINESE: 2})

    assert _per_class(split.val_indices, labels) == {0: 2, 1: 1, 2: 1}
    assert _per_class(split.train_indices, labels) == {0: 8, 1: 4, 2: 1}


def test_split_remainder_of_one(tmp_path: Path) -> None:
    # 5 images at 20 % leave one validation image; a class with one image goes to training.
    split, labels = _split_tree(tmp_path, {CHIHUAHUA: 5, MALTESE: 1, PEKINESE: 3})

    assert _per_class(split.val_indices, labels) == {0: 1, 2: 1}
    assert _per_class(split.train_indices, labels) == {0: 4, 1: 1, 2: 2}
    assert "1 classes with one image are in training only" in split.description


def test_split_large_fraction_keeps_one_for_training(tmp_path: Path) -> None:
    split, labels = _split_tree(tmp_path, {CHIHUAHUA: 3, MALTESE: 2}, val_fraction=0.9)

    assert _per_class(split.train_indices, labels) == {0: 1, 1: 1}
    assert _per_class(split.val_indices, labels) == {0: 2, 1: 1}


def test_split_is_seeded(tmp_path: Path) -> None:
    imagegen.make_class_tree(tmp_path, {CHIHUAHUA: 20, MALTESE: 20})
    index = scan_image_folder(tmp_path)

    first = stratified_split(index.paths, index.labels, 0.25, seed=7)
    again = stratified_split(index.paths, index.labels, 0.25, seed=7)
    other = stratified_split(index.paths, index.labels, 0.25, seed=8)

    assert first == again
    assert first.val_indices != other.val_indices
    assert len(other.val_indices) == len(first.val_indices) == 10


def test_split_description_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dogbreeds.split"):
        split, _ = _split_tree(tmp_path, {CHIHUAHUA: 5, MALTESE: 5})

    assert split.description == (
        "Split 10 images into 8 for training and 2 for validation (stratified per class, 20% validation, seed 0)."
    )
    assert split.description in caplog.text


def test_duplicates_land_on_same_side(tmp_path: Path) -> None:
    imagegen.make_class_tree(tmp_path, {CHIHUAHUA: 6, MALTESE: 6})
    original = tmp_path / CHIHUAHUA / "n02085620_0.jpg"
    for copy in range(4):
        shutil.copyfile(original, tmp_path / CHIHUAHUA / f"copy_{copy}.jpg")
    shutil.copyfile(tmp_path / MALTESE / "n02085936_3.jpg", tmp_path / MALTESE / "z_copy.jpg")
    index = scan_image_folder(tmp_path)
    copies = [position for position, path in enumerate(index.paths) if imagegen.file_digest(path) ==
              imagegen.file_digest(original)]
    assert len(copies) == 5

    for seed in range(12):
        split = stratified_split(index.paths, index.labels, 0.5, seed)
        in_val = {position in split.val_indices for position in copies}
        assert len(in_val) == 1, f"seed {seed} split byte-identical copies across sides"
        assert "5 byte-identical copies" in split.description


def test_duplicate_groups_by_content(tmp_path: Path) -> None:
    a = imagegen.write_bytes(tmp_path / "a.jpg", b"same bytes")
    b = imagegen.write_bytes(tmp_path / "b.jpg", b"other data")
    c = imagegen.write_bytes(tmp_path / "c.jpg", b"same bytes")
    d = imagegen.write_bytes(tmp_path / "d.jpg", b"longer content")
    missing = tmp_path / "missing.jpg"

    assert duplicate_groups([a, b, c, d, missing]) == [[0, 2], [1], [3], [4]]


def test_duplicates_across_classes_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    imagegen.make_class_tree(tmp_path, {CHIHUAHUA: 3, MALTESE: 3})
    shutil.copyfile(tmp_path / CHIHUAHUA / "n02085620_0.jpg", tmp_path / MALTESE / "stray.jpg")
    index = scan_image_folder(tmp_path)

    with caplog.at_level(logging.WARNING, logger="dogbreeds.split"):
        split = stratified_split(index.paths, index.labels, 0.3, 0)

    assert "more than one class" in caplog.text
    assert "stray.jpg" in caplog.text
    assert len(split.train_indices) + len(split.val_indices) == 7


def test_single_images_warn_empty_validation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dogbreeds.split"):
        split, _ = _split_tree(tmp_path, {CHIHUAHUA: 1, MALTESE: 1})

    assert split.val_indices == []
    assert split.train_indices == [0, 1]
    assert "validation set is empty" in caplog.text


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_invalid_fraction_rejected(tmp_path: Path, fraction: float) -> None:
    with pytest.raises(ValueError, match=f"Validation fraction {fraction} is invalid"):
        stratified_split([tmp_path / "a.jpg"], [0], fraction, 0)


def test_length_mismatch_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 paths but 1 labels"):
        stratified_split([tmp_path / "a.jpg", tmp_path / "b.jpg"], [0], 0.2, 0)


def test_same_folder_cases(tmp_path: Path) -> None:
    imagegen.make_class_tree(tmp_path / "images" / "images", {CHIHUAHUA: 1, MALTESE: 1})
    imagegen.make_class_tree(tmp_path / "other", {CHIHUAHUA: 1, MALTESE: 1})

    assert same_folder(tmp_path / "images" / "images", tmp_path / "images" / "images")
    assert same_folder(tmp_path / "images", tmp_path / "images" / "images")
    assert same_folder(tmp_path / "images" / "images" / ".." / "images", str(tmp_path / "images" / "images"))
    assert not same_folder(tmp_path / "images", tmp_path / "other")
    assert not same_folder(tmp_path / "images", tmp_path / "missing")


def test_match_test_classes_relabels(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    imagegen.make_class_tree(tmp_path / "train", {CHIHUAHUA: 2, MALTESE: 2, PEKINESE: 2})
    imagegen.make_class_tree(tmp_path / "test", {CHIHUAHUA: 1, PEKINESE: 2})
    train = scan_image_folder(tmp_path / "train")
    test = scan_image_folder(tmp_path / "test")
    assert test.labels == [0, 1, 1]

    with caplog.at_level(logging.WARNING, logger="dogbreeds.split"):
        matched = match_test_classes(train, test)

    assert matched.class_keys == train.class_keys
    assert matched.class_names == ["Chihuahua", "Maltese dog", "Pekinese"]
    assert matched.labels == [0, 2, 2]
    assert matched.paths == test.paths
    assert matched.root == test.root
    assert MALTESE in caplog.text


def test_match_test_classes_unknown_class(tmp_path: Path) -> None:
    imagegen.make_class_tree(tmp_path / "train", {CHIHUAHUA: 1, MALTESE: 1})
    imagegen.make_class_tree(tmp_path / "test", {CHIHUAHUA: 1, "n02085936-Maltese": 1, "husky": 1})
    train = scan_image_folder(tmp_path / "train")
    test = scan_image_folder(tmp_path / "test")

    with pytest.raises(DataFolderError) as caught:
        match_test_classes(train, test)
    message = str(caught.value)
    assert "'husky'" in message
    assert f"did you mean '{MALTESE}'" in message
    assert "2 classes" in message


def _official_tree(tmp_path: Path) -> Path:
    root = tmp_path / "Images"
    imagegen.make_class_tree(root, {CHIHUAHUA: 4, MALTESE: 2})
    return root


def test_official_split_from_lists(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _official_tree(tmp_path)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train_list.mat").write_bytes(SCIPY_TRAIN_LIST_COMPRESSED)
    test_files = [f"{CHIHUAHUA}/n02085620_2.jpg", f"{MALTESE}/n02085936_1.jpg", f"{MALTESE}/n02085936_99.jpg"]
    write_split_lists(tmp_path / "matlab", [], test_files)
    shutil.copyfile(tmp_path / "matlab" / "test_list.mat", lists / "test_list.mat")
    index = scan_image_folder(tmp_path)

    with caplog.at_level(logging.WARNING, logger="dogbreeds.split"):
        split = official_split(index, lists)

    relative = [path.relative_to(root).as_posix() for path in index.paths]
    assert [relative[position] for position in split.train_indices] == SCIPY_TRAIN_FILES
    assert [relative[position] for position in split.val_indices] == test_files[:2]
    assert "3 training and 2 test images" in split.description
    assert "n02085936_99.jpg" in caplog.text
    assert "1 images under" in caplog.text


def test_official_split_accepts_list_file_path(tmp_path: Path) -> None:
    _official_tree(tmp_path)
    lists = write_split_lists(tmp_path / "lists", [f"{CHIHUAHUA}/n02085620_0.jpg"], [f"{MALTESE}/n02085936_0.jpg"])
    index = scan_image_folder(tmp_path)

    split = official_split(index, lists / "train_list.mat")

    assert len(split.train_indices) == 1
    assert len(split.val_indices) == 1


def test_official_split_missing_list(tmp_path: Path) -> None:
    _official_tree(tmp_path)
    (tmp_path / "lists").mkdir()
    index = scan_image_folder(tmp_path)

    with pytest.raises(FileNotFoundError, match="train_list.mat") as caught:
        official_split(index, tmp_path / "lists")
    assert "lists.tar" in str(caught.value)


def test_official_split_wrong_root(tmp_path: Path) -> None:
    _official_tree(tmp_path)
    lists = write_split_lists(tmp_path / "lists", ["Images/x/y.jpg"], [f"{MALTESE}/n02085936_0.jpg"])
    index = scan_image_folder(tmp_path)

    with pytest.raises(DataFolderError, match="None of the 1 files") as caught:
        official_split(index, lists)
    assert "Images/x/y.jpg" in str(caught.value)


def test_official_split_overlap_rejected(tmp_path: Path) -> None:
    _official_tree(tmp_path)
    shared = f"{CHIHUAHUA}/n02085620_0.jpg"
    lists = write_split_lists(tmp_path / "lists", [shared], [shared, f"{MALTESE}/n02085936_0.jpg"])
    index = scan_image_folder(tmp_path)

    with pytest.raises(DataFolderError, match="in both"):
        official_split(index, lists)


def test_official_split_without_file_list(tmp_path: Path) -> None:
    _official_tree(tmp_path)
    lists = write_split_lists(tmp_path / "lists", [], [f"{MALTESE}/n02085936_0.jpg"])
    (lists / "train_list.mat").write_bytes(MatlabStyleWriter().file({"names": ["a.jpg"]}))
    index = scan_image_folder(tmp_path)

    with pytest.raises(MatFileError, match="no variable 'file_list'"):
        official_split(index, lists)


def test_match_test_classes_unicode_forms(tmp_path: Path) -> None:
    composed = unicodedata.normalize("NFC", "치와와")
    decomposed = unicodedata.normalize("NFD", "치와와")
    assert composed != decomposed
    imagegen.make_class_tree(tmp_path / "train", {composed: 1, "진돗개": 1})
    imagegen.make_class_tree(tmp_path / "test", {decomposed: 2, "진돗개": 1})
    train = scan_image_folder(tmp_path / "train")
    test = scan_image_folder(tmp_path / "test")

    matched = match_test_classes(train, test)

    by_name = {path.parent.name: label for path, label in zip(matched.paths, matched.labels)}
    assert by_name[decomposed] == train.class_keys.index(composed)
    assert by_name["진돗개"] == train.class_keys.index("진돗개")
    assert matched.class_names == train.class_names
