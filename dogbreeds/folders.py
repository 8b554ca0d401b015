"""Find the class root of an image folder and list its images, one class per sub-folder.

The expected layout is the one Stanford Dogs uses (and torchvision's ImageFolder):

    ROOT/n02085620-Chihuahua/n02085620_5927.jpg
    ROOT/n02085936-Maltese_dog/n02085936_233.jpg
    ...

ROOT may also be given through single-folder wrappers such as `images/images/` or `images/Images/`.
Nothing here decodes an image: `scan_image_folder` lists candidates by extension, and `drop_unreadable`
removes the ones that a later decoding pass could not read.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# Files that operating systems and tools leave in folders. Hidden names (leading dot) are skipped as well.
JUNK_FILE_NAMES: frozenset[str] = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})
JUNK_FOLDER_NAMES: frozenset[str] = frozenset({"__macosx"})

# Stanford Dogs ships bounding boxes in an `Annotation/` tree that mirrors the breed folders.
ANNOTATION_FOLDER_NAMES: frozenset[str] = frozenset({"annotation", "annotations"})

# Limits the descent through wrapper folders so a deep chain of single folders cannot loop for long.
MAX_WRAPPER_DEPTH = 8

WORDNET_PREFIX = re.compile(r"^n\d{8}-(?P<breed>.+)$")

EXPECTED_LAYOUT = (
    "Expected one sub-folder per class, each with image files, for example:\n"
    "  ROOT/n02085620-Chihuahua/n02085620_5927.jpg\n"
    "  ROOT/n02085936-Maltese_dog/n02085936_233.jpg"
)


class DataFolderError(ValueError):
    """Raised when an image folder exists but does not have a usable class layout."""


@dataclass(frozen=True)
class ImageIndex:
    """Candidate image files of a class-per-folder tree, with integer labels into `class_keys`."""

    root: Path
    class_keys: list[str]
    class_names: list[str]
    paths: list[Path]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        """Number of classes, including any class that has no image in this index."""
        return len(self.class_keys)

    def class_counts(self) -> list[int]:
        """Count the images of each class, in `class_keys` order."""
        counts = [0] * len(self.class_keys)
        for label in self.labels:
            counts[label] += 1
        return counts


def display_name(folder_name: str) -> str:
    """Turn a Stanford Dogs folder name into a breed name; other names are returned unchanged.

    "n02085620-Chihuahua" becomes "Chihuahua" and "n02085936-Maltese_dog" becomes "Maltese dog". The
    result is in Unicode NFC form, because macOS stores names such as "치와와" decomposed (NFD).
    """
    name = unicodedata.normalize("NFC", folder_name)
    match = WORDNET_PREFIX.match(name)
    if match is None:
        return name
    return match.group("breed").replace("_", " ")


def class_key_for_matching(folder_name: str) -> str:
    """Return the form of a class key that compares equal across file systems (Unicode NFC)."""
    return unicodedata.normalize("NFC", folder_name)


def is_hidden_or_junk(name: str, *, is_dir: bool) -> bool:
    """Tell whether a file or folder name is hidden or operating-system clutter that never contains data."""
    if name.startswith("."):
        return True
    if is_dir:
        return name.lower() in JUNK_FOLDER_NAMES
    return name.lower() in JUNK_FILE_NAMES


def is_image_name(name: str) -> bool:
    """Tell whether a file name has one of `IMAGE_EXTENSIONS` (any letter case) and is not junk."""
    if is_hidden_or_junk(name, is_dir=False):
        return False
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _check_is_folder(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(
            f"Image folder '{path}' was not found. Expected a folder with one sub-folder per class. "
            f"Check the path, or download Stanford Dogs with: python -m dogbreeds.data download"
        )
    if not path.is_dir():
        raise NotADirectoryError(
            f"Image folder '{path}' is a file, not a folder. Expected a folder with one sub-folder per class; "
            f"if it is an archive, extract it first and pass the extracted folder."
        )


def _sub_folders(path: Path) -> list[Path]:
    """List the visible sub-folders of `path` that can hold classes, sorted by name."""
    folders = []
    with os.scandir(path) as entries:
        for entry in entries:
            if not entry.is_dir():
                continue
            if is_hidden_or_junk(entry.name, is_dir=True):
                continue
            if entry.name.lower() in ANNOTATION_FOLDER_NAMES:
                continue
            folders.append(Path(entry.path))
    return sorted(folders, key=lambda folder: folder.name)


def _has_direct_images(path: Path) -> bool:
    with os.scandir(path) as entries:
        return any(entry.is_file() and is_image_name(entry.name) for entry in entries)


def _first_image_below(path: Path) -> Path | None:
    """Return the first image file found at any depth under `path`, or None; stops at the first hit."""
    for folder, dir_names, file_names in os.walk(path):
        dir_names[:] = sorted(name for name in dir_names if not is_hidden_or_junk(name, is_dir=True))
        for name in sorted(file_names):
            if is_image_name(name):
                return Path(folder) / name
    return None


def _folders_with_images(path: Path, limit: int) -> list[Path]:
    """List up to `limit` class-candidate sub-folders of `path` that contain images at any depth."""
    found = []
    for folder in _sub_folders(path):
        if _first_image_below(folder) is not None:
            found.append(folder)
            if len(found) == limit:
                break
    return found


def find_class_root(path: str | Path) -> Path:
    """Descend from `path` through wrapper folders to the folder whose sub-folders are the classes.

    A wrapper has no images of its own and exactly one sub-folder with images somewhere below it (hidden,
    junk and `Annotation/` folders never count). So `images/images/` is unwrapped, and so is a download
    folder with `Images/`, `Annotation/` and `lists/`. Raises FileNotFoundError or NotADirectoryError when
    `path` is not a folder.
    """
    root = Path(path).expanduser()
    _check_is_folder(root)

    for _ in range(MAX_WRAPPER_DEPTH):
        if _has_direct_images(root):
            return root
        candidates = _folders_with_images(root, limit=2)
        if len(candidates) != 1:
            return root
        only_child = candidates[0]
        if _has_direct_images(only_child):
            # The single sub-folder contains images itself, so it is a class and `root` is the class root.
            return root
        root = only_child
    return root


def _list_class_images(class_folder: Path) -> list[Path]:
    """List the image files directly inside one class folder, sorted, skipping hidden and junk files.

    Sub-folders of a class folder are not searched: a folder of class folders passed one level too high
    would otherwise turn `train/` and `test/` into two classes.
    """
    with os.scandir(class_folder) as entries:
        images = [Path(entry.path) for entry in entries if entry.is_file() and is_image_name(entry.name)]
    return sorted(images)


def _describe_other_files(root: Path, limit: int = 5) -> str:
    """Summarise the file extensions found under `root`, to show in a "no images" error."""
    counts: dict[str, int] = {}
    for _folder, dir_names, file_names in os.walk(root):
        dir_names[:] = [name for name in dir_names if not is_hidden_or_junk(name, is_dir=True)]
        for name in file_names:
            if is_hidden_or_junk(name, is_dir=False):
                continue
            extension = os.path.splitext(name)[1].lower() or "(no extension)"
            counts[extension] = counts.get(extension, 0) + 1
    if not counts:
        return "no files at all"
    common = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return "files with these extensions: " + ", ".join(f"{ext} ({n})" for ext, n in common)


def _check_enough_classes(root: Path, class_keys: Sequence[str], what: str) -> None:
    if len(class_keys) < 2:
        found = f"only '{class_keys[0]}'" if class_keys else "none"
        raise DataFolderError(
            f"Image folder '{root}' has fewer than two classes with {what} (found {found}). "
            f"A classifier needs at least two classes: add another class folder. {EXPECTED_LAYOUT}"
        )


def scan_image_folder(path: str | Path) -> ImageIndex:
    """List the candidate images of a class-per-folder tree without decoding them.

    Classes are the sub-folders of the class root (see `find_class_root`) that contain at least one file
    with an image extension, sorted by folder name. A class folder without such files is dropped with
    a warning. Raises FileNotFoundError / NotADirectoryError for a missing path and DataFolderError when
    there are no class folders, no image files, or fewer than two classes.
    """
    root = find_class_root(path)
    folders = _sub_folders(root)
    if not folders:
        found = "image files directly inside it" if _has_direct_images(root) else _describe_other_files(root)
        raise DataFolderError(
            f"Image folder '{root}' has no class sub-folders (found {found}). {EXPECTED_LAYOUT}\n"
            f"Move each class's images into its own sub-folder named after the class."
        )

    if _has_direct_images(root):
        logger.warning(
            "Ignoring the image files directly inside '%s': only images inside class sub-folders are used.", root
        )

    class_keys: list[str] = []
    paths: list[Path] = []
    labels: list[int] = []
    empty_folders: list[str] = []
    for folder in folders:
        images = _list_class_images(folder)
        if not images:
            empty_folders.append(folder.name)
            continue
        label = len(class_keys)
        class_keys.append(folder.name)
        paths.extend(images)
        labels.extend([label] * len(images))

    if not paths:
        raise DataFolderError(_no_images_message(root, len(folders)))
    for name in empty_folders:
        logger.warning("Skipping class folder '%s': it contains no image files directly inside it.", root / name)
    _check_enough_classes(root, class_keys, "image files")

    class_names = [display_name(key) for key in class_keys]
    logger.info("Found %d images in %d classes under '%s'.", len(paths), len(class_keys), root)
    return ImageIndex(root=root, class_keys=class_keys, class_names=class_names, paths=paths, labels=labels)


def _no_images_message(root: Path, folder_count: int) -> str:
    message = f"Image folder '{root}' has {folder_count} class folders but no image files directly inside them"
    nested = _first_image_below(root)
    if nested is not None:
        return (
            f"{message}. Images were found deeper, for example '{nested}'. Pass the folder whose sub-folders "
            f"are the classes, such as '{nested.parent.parent}'. {EXPECTED_LAYOUT}"
        )
    return (
        f"{message} (found {_describe_other_files(root)}). Searched for the extensions "
        f"{', '.join(IMAGE_EXTENSIONS)} in any letter case; convert the images to JPEG or PNG."
    )


def drop_unreadable(
    index: ImageIndex,
    readable: Sequence[bool],
    *,
    reasons: Sequence[str | None] | None = None,
    keep_classes: bool = False,
) -> ImageIndex:
    """Remove the files that failed to decode, warning about each one and then the total.

    `readable[i]` is true when `index.paths[i]` decoded, and `reasons[i]` (optional) is the decoder's message
    for a failed file. Classes left without images are dropped with a warning and the remaining classes are
    relabelled in their sorted order. With `keep_classes`, the classes and label numbers stay as they are,
    which an index already mapped to training labels needs. Raises DataFolderError when no
    readable image remains, or (without `keep_classes`) fewer than two classes.
    """
    if len(readable) != len(index.paths):
        raise ValueError(
            f"drop_unreadable got {len(readable)} readable flags for {len(index.paths)} paths; "
            f"pass exactly one flag per path in index.paths."
        )
    if reasons is not None and len(reasons) != len(index.paths):
        raise ValueError(f"drop_unreadable got {len(reasons)} reasons for {len(index.paths)} paths.")

    kept_paths: list[Path] = []
    kept_labels: list[int] = []
    for position, (path, label, ok) in enumerate(zip(index.paths, index.labels, readable)):
        if ok:
            kept_paths.append(path)
            kept_labels.append(label)
            continue
        reason = reasons[position] if reasons is not None else None
        logger.warning("Skipping unreadable image '%s'%s", path, f": {reason}" if reason else ".")

    skipped = len(index.paths) - len(kept_paths)
    if skipped:
        logger.warning("Skipped %d of %d images that could not be decoded.", skipped, len(index.paths))
    if not kept_paths:
        raise DataFolderError(
            f"None of the {len(index.paths)} image files under '{index.root}' could be decoded. "
            f"Searched for the extensions {', '.join(IMAGE_EXTENSIONS)}; check the warnings above for the "
            f"reason per file and convert the images to JPEG or PNG."
        )

    had_images = set(index.labels)
    has_images = set(kept_labels)
    for label in sorted(had_images - has_images):
        logger.warning(
            "Class folder '%s' has no readable images left%s.",
            index.root / index.class_keys[label],
            "" if keep_classes else "; dropping the class",
        )
    if keep_classes:
        return ImageIndex(index.root, index.class_keys, index.class_names, kept_paths, kept_labels)

    used = sorted(has_images)
    new_label = {old: new for new, old in enumerate(used)}
    class_keys = [index.class_keys[old] for old in used]
    _check_enough_classes(index.root, class_keys, "readable images")
    return ImageIndex(
        root=index.root,
        class_keys=class_keys,
        class_names=[index.class_names[old] for old in used],
        paths=kept_paths,
        labels=[new_label[old] for old in kept_labels],
    )
