"""Tests for finding the class root, scanning class folders and dropping unreadable files."""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path

import imagegen
import pytest

from dogbreeds.folders import (
    IMAGE_EXTENSIONS,
    DataFolderError,
    ImageIndex,
    display_name,
    drop_unreadable,
    find_class_root,
    scan_image_folder,
)

CHIHUAHUA = "n02085620-Chihuahua"
MALTESE = "n02085936-Maltese_dog"
PEKINESE = "n02086079-Pekinese"


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        (CHIHUAHUA, "Chihuahua"),
        (MALTESE, "Maltese dog"),
        ("n02096051-Airedale", "Airedale"),
        ("n02113978-Mexican_hairless", "Mexican hairless"),
        ("golden_retriever", "golden_retriever"),
        ("cats", "cats"),
        ("n123-short_id", "n123-short_id"),
        (unicodedata.normalize("NFD", "치와와"), "치와와"),
    ],
)
def test_display_name(folder: str, expected: str) -> None:
    assert display_name(folder) == expected


def test_scan_labels_follow_sorted_folder_names(tmp_path: Path) -> None:
    imagegen.make_class_tree(tmp_path, {PEKINESE: 1, CHIHUAHUA: 2, MALTESE: 3})

    index = scan_image_folder(tmp_path)

    assert index.root == tmp_path
    assert index.class_keys == [CHIHUAHUA, MALTESE, PEKINESE]
    assert index.class_names == ["Chihuahua", "Maltese dog", "Pekinese"]
    assert index.labels == [0, 0, 1, 1, 1, 2]
    assert [path.parent.name for path in index.paths] == [CHIHUAHUA] * 2 + [MALTESE] * 3 + [PEKINESE]
    assert index.class_counts() == [2, 3, 1]
    assert len(index) == 6


def test_scan_paths_sorted_within_class(tmp_path: Path) -> None:
    for name in ["b.jpg", "a.jpg", "c.jpg"]:
        imagegen.write_jpeg(tmp_path / "x" / name)
    imagegen.write_jpeg(tmp_path / "y" / "z.jpg")

    index = scan_image_folder(tmp_path)

    assert [path.name for path in index.paths] == ["a.jpg", "b.jpg", "c.jpg", "z.jpg"]


@pytest.mark.parametrize("wrapper", ["images/images", "images/Images", "dogs/data/Images"])
def test_find_class_root_descends_wrappers(tmp_path: Path, wrapper: str) -> None:
    class_root = tmp_path / wrapper
    imagegen.make_class_tree(class_root, {CHIHUAHUA: 1, MALTESE: 1})

    assert find_class_root(tmp_path) == class_root
    assert scan_image_folder(tmp_path).root == class_root


def test_find_class_root_ignores_annotation_tree(tmp_path: Path) -> None:
    imagegen.make_class_tree(tmp_path / "Images", {CHIHUAHUA: 1, MALTESE: 1})
    annotation = tmp_path / "Annotation" / CHIHUAHUA / "n02085620_0"
    annotation.parent.mkdir(parents=True)
    annotation.write_text("<annotation></annotation>")

    index = scan_image_folder(tmp_path)

    assert index.root == tmp_path / "Images"
    assert index.class_keys == [CHIHUAHUA, MALTESE]


def test_annotation_folder_in_class_root_is_not_class(tmp_path: Path) -> None:
    imagegen.make_class_tree(tmp_path, {CHIHUAHUA: 1, MALTESE: 1})
    imagegen.write_jpeg(tmp_path / "Annotation" / "stray.jpg")

    assert scan_image_folder(tmp_path).class_keys == [CHIHUAHUA, MALTESE]


def test_class_root_given_directly_is_kept(tmp_path: Path) -> None:
    imagegen.make_class_tree(tmp_path / "images" / "images", {CHIHUAHUA: 1, MALTESE: 1})
    class_root = tmp_path / "images" / "images"

    assert find_class_root(class_root) == class_root


def test_single_class_folder_is_not_unwrapped(tmp_path: Path) -> None:
    imagegen.make_class_tree(tmp_path, {CHIHUAHUA: 2})

    assert find_class_root(tmp_path) == tmp_path
    with pytest.raises(DataFolderError, match="fewer than two classes") as caught:
        scan_image_folder(tmp_path)
    assert CHIHUAHUA in str(caught.value)


def test_scan_ignores_junk_and_hidden_entries(tmp_path: Path) -> None:
    imagegen.make_class_tree(tmp_path, {CHIHUAHUA: 2, MALTESE: 1})
    imagegen.write_bytes(tmp_path / CHIHUAHUA / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    imagegen.write_bytes(tmp_path / CHIHUAHUA / "Thumbs.db", b"junk")
    imagegen.write_bytes(tmp_path / CHIHUAHUA / "desktop.ini", b"[.ShellClassInfo]")
    imagegen.write_bytes(tmp_path / CHIHUAHUA / "notes.txt", b"not an image")
    imagegen.write_jpeg(tmp_path / CHIHUAHUA / "._n02085620_0.jpg")
    imagegen.write_jpeg(tmp_path / CHIHUAHUA / ".ipynb_checkpoints" / "copy.jpg")
    imagegen.write_jpeg(tmp_path / ".ipynb_checkpoints" / "copy.jpg")
    imagegen.write_jpeg(tmp_path / "__MACOSX" / CHIHUAHUA / "._x.jpg")
    imagegen.write_jpeg(tmp_path / ".hidden_class" / "x.jpg")

    index = scan_image_folder(tmp_path)

    assert index.class_keys == [CHIHUAHUA, MALTESE]
    assert sorted(path.name for path in index.paths) == ["n02085620_0.jpg", "n02085620_1.jpg", "n02085936_0.jpg"]


def test_scan_ignores_junk_around_wrapper(tmp_path: Path) -> None:
    imagegen.make_class_tree(tmp_path / "images" / "images", {CHIHUAHUA: 1, MALTESE: 1})
    imagegen.write_bytes(tmp_path / "images" / ".DS_Store", b"junk")
    (tmp_path / "__MACOSX" / "images").mkdir(parents=True)

    assert scan_image_folder(tmp_path).root == tmp_path / "images" / "images"


def test_scan_matches_extensions_in_any_case(tmp_path: Path) -> None:
    imagegen.write_jpeg(tmp_path / "a" / "one.JPG")
    imagegen.write_jpeg(tmp_path / "a" / "two.Jpeg")
    imagegen.write_png(tmp_path / "b" / "three.PNG")
    imagegen.write_image(tmp_path / "b" / "four.WEBP", imagegen.Image.new("RGB", (8, 8)), format="WEBP")
    imagegen.write_image(tmp_path / "b" / "five.TIFF", imagegen.Image.new("RGB", (8, 8)), format="TIFF")

    index = scan_image_folder(tmp_path)

    assert sorted(path.name for path in index.paths) == ["five.TIFF", "four.WEBP", "one.JPG", "three.PNG", "two.Jpeg"]


def test_scan_ignores_images_nested_in_class(tmp_path: Path) -> None:
    imagegen.write_jpeg(tmp_path / "a" / "x.jpg")
    imagegen.write_jpeg(tmp_path / "a" / "more" / "y.jpg")
    imagegen.write_jpeg(tmp_path / "b" / "z.jpg")

    index = scan_image_folder(tmp_path)

    assert index.paths == [tmp_path / "a" / "x.jpg", tmp_path / "b" / "z.jpg"]
    assert index.labels == [0, 1]


def test_parent_of_train_and_test_points_deeper(tmp_path: Path) -> None:
    imagegen.make_class_tree(tmp_path / "train", {CHIHUAHUA: 1, MALTESE: 1})
    imagegen.make_class_tree(tmp_path / "test", {CHIHUAHUA: 1, MALTESE: 1})

    with pytest.raises(DataFolderError, match="Images were found deeper") as caught:
        scan_image_folder(tmp_path)
    assert str(tmp_path / "test") in str(caught.value)


def test_download_layout_unwrapped(tmp_path: Path) -> None:
    imagegen.make_class_tree(tmp_path / "Images", {CHIHUAHUA: 1, MALTESE: 1})
    imagegen.write_bytes(tmp_path / "lists" / "train_list.mat", b"MATLAB 5.0")
    imagegen.write_bytes(tmp_path / "Annotation" / CHIHUAHUA / "n02085620_0", b"<annotation/>")
    imagegen.write_bytes(tmp_path / "images.tar.part", b"partial")

    assert find_class_root(tmp_path) == tmp_path / "Images"


def test_images_in_class_root_ignored_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    imagegen.make_class_tree(tmp_path, {CHIHUAHUA: 1, MALTESE: 1})
    imagegen.write_jpeg(tmp_path / "stray.jpg")

    with caplog.at_level(logging.WARNING, logger="dogbreeds.folders"):
        index = scan_image_folder(tmp_path)

    assert len(index) == 2
    assert "Ignoring the image files directly inside" in caplog.text


def test_empty_breed_folder_dropped_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    imagegen.make_class_tree(tmp_path, {CHIHUAHUA: 1, PEKINESE: 1})
    (tmp_path / MALTESE).mkdir()
    imagegen.write_bytes(tmp_path / MALTESE / "Thumbs.db", b"junk")

    with caplog.at_level(logging.WARNING, logger="dogbreeds.folders"):
        index = scan_image_folder(tmp_path)

    assert index.class_keys == [CHIHUAHUA, PEKINESE]
    assert index.labels == [0, 1]
    assert any(MALTESE in record.getMessage() for record in caplog.records)


def test_missing_folder_raises_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope"

    with pytest.raises(FileNotFoundError, match="nope") as caught:
        scan_image_folder(missing)
    assert "download" in str(caught.value)


def test_file_instead_of_folder_raises(tmp_path: Path) -> None:
    archive = imagegen.write_bytes(tmp_path / "images.tar", b"not a folder")

    with pytest.raises(NotADirectoryError, match="images.tar"):
        scan_image_folder(archive)


def test_no_class_folders_shows_layout(tmp_path: Path) -> None:
    imagegen.write_jpeg(tmp_path / "loose.jpg")

    with pytest.raises(DataFolderError) as caught:
        scan_image_folder(tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message
    assert "no class sub-folders" in message
    assert "image files directly inside it" in message
    assert "n02085620-Chihuahua/n02085620_5927.jpg" in message


def test_empty_folder_raises_no_class_folders(tmp_path: Path) -> None:
    with pytest.raises(DataFolderError, match="no files at all"):
        scan_image_folder(tmp_path)


def test_no_images_lists_extensions(tmp_path: Path) -> None:
    imagegen.write_bytes(tmp_path / "a" / "photo.heic", b"....ftypheic")
    imagegen.write_bytes(tmp_path / "b" / "notes.txt", b"text")

    with pytest.raises(DataFolderError) as caught:
        scan_image_folder(tmp_path)
    message = str(caught.value)
    assert "no image files" in message
    assert ".heic (1)" in message
    for extension in IMAGE_EXTENSIONS:
        assert extension in message


def _index_with_three_classes(tmp_path: Path) -> ImageIndex:
    imagegen.make_class_tree(tmp_path, {CHIHUAHUA: 2, MALTESE: 1, PEKINESE: 2})
    return scan_image_folder(tmp_path)


def test_drop_unreadable_relabels_classes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    index = _index_with_three_classes(tmp_path)

    with caplog.at_level(logging.WARNING, logger="dogbreeds.folders"):
        reasons = [None, "truncated", "empty", None, None]
        kept = drop_unreadable(index, [True, False, False, True, True], reasons=reasons)

    assert kept.class_keys == [CHIHUAHUA, PEKINESE]
    assert kept.class_names == ["Chihuahua", "Pekinese"]
    assert kept.labels == [0, 1, 1]
    assert kept.paths == [index.paths[0], index.paths[3], index.paths[4]]
    messages = [record.getMessage() for record in caplog.records]
    assert any(str(index.paths[1]) in message and "truncated" in message for message in messages)
    assert any(str(index.paths[2]) in message for message in messages)
    assert any("Skipped 2 of 5" in message for message in messages)
    assert any(MALTESE in message and "no readable images" in message for message in messages)


def test_drop_unreadable_keep_classes(tmp_path: Path) -> None:
    index = _index_with_three_classes(tmp_path)

    kept = drop_unreadable(index, [True, True, False, True, True], keep_classes=True)

    assert kept.class_keys == index.class_keys
    assert kept.labels == [0, 0, 2, 2]


def test_drop_unreadable_all_ok_changes_nothing(tmp_path: Path) -> None:
    index = _index_with_three_classes(tmp_path)

    assert drop_unreadable(index, [True] * 5) == index


def test_drop_unreadable_none_readable_raises(tmp_path: Path) -> None:
    index = _index_with_three_classes(tmp_path)

    with pytest.raises(DataFolderError, match="None of the 5 image files") as caught:
        drop_unreadable(index, [False] * 5)
    assert ".webp" in str(caught.value)


def test_drop_unreadable_one_class_left_raises(tmp_path: Path) -> None:
    index = _index_with_three_classes(tmp_path)

    with pytest.raises(DataFolderError, match="fewer than two classes"):
        drop_unreadable(index, [True, True, False, False, False])


def test_drop_unreadable_length_mismatch_raises(tmp_path: Path) -> None:
    index = _index_with_three_classes(tmp_path)

    with pytest.raises(ValueError, match="3 readable flags for 5 paths"):
        drop_unreadable(index, [True, True, True])
