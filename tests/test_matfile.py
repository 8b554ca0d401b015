"""Tests for the scipy-free MATLAB level 5 reader, against files written by scipy and by a MATLAB-style writer."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from _data_a_helpers import SCIPY_MIXED_PLAIN, SCIPY_TRAIN_FILES, SCIPY_TRAIN_LIST_COMPRESSED, MatlabStyleWriter

from dogbreeds.matfile import MatFileError, cell_strings, load_mat

def _write(tmp_path: Path, data: bytes, name: str = "list.mat") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_scipy_compressed_stanford_list(tmp_path: Path) -> None:
    variables = load_mat(_write(tmp_path, SCIPY_TRAIN_LIST_COMPRESSED))

    assert set(variables) == {"file_list", "annotation_list", "labels"}
    assert variables["file_list"].shape == (3, 1)
    assert cell_strings(variables["file_list"]) == SCIPY_TRAIN_FILES
    assert cell_strings(variables["annotation_list"]) == [name[:-4] for name in SCIPY_TRAIN_FILES]
    assert variables["labels"].tolist() == [[1.0], [1.0], [2.0]]


def test_scipy_mixed_types(tmp_path: Path) -> None:
    variables = load_mat(_write(tmp_path, SCIPY_MIXED_PLAIN))

    assert variables["ints"].dtype == np.int16
    assert variables["ints"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert variables["flag"].dtype == np.bool_
    assert variables["flag"].tolist() == [[True, False]]
    assert variables["cplx"].tolist() == [[1 + 2j]]
    assert variables["charmat"] == ["ab", "cd"]
    assert variables["s"]["b"] == "text"
    assert variables["s"]["a"].tolist() == [[1.5]]
    assert variables["name"] == "größe"


def test_variable_names_filter(tmp_path: Path) -> None:
    variables = load_mat(_write(tmp_path, SCIPY_TRAIN_LIST_COMPRESSED), ["file_list"])

    assert list(variables) == ["file_list"]


@pytest.mark.parametrize("byte_order", ["<", ">"])
@pytest.mark.parametrize("compress", [True, False])
def test_matlab_style_file(tmp_path: Path, byte_order: str, compress: bool) -> None:
    files = ["n02085620-Chihuahua/n02085620_5927.jpg", "n02113978-Mexican_hairless/n02113978_1.jpg", "ab"]
    writer = MatlabStyleWriter(byte_order=byte_order, compress=compress)
    path = _write(tmp_path, writer.file({"file_list": files, "labels": np.array([1, 120, 7]), "x": "é"}))

    variables = load_mat(path)

    assert cell_strings(variables["file_list"]) == files
    assert variables["labels"].dtype == np.float64
    assert variables["labels"].ravel().tolist() == [1.0, 120.0, 7.0]
    assert variables["x"] == "é"


def test_not_a_mat_file(tmp_path: Path) -> None:
    path = _write(tmp_path, b"x" * 200, "train_list.mat")

    with pytest.raises(MatFileError, match="not a MATLAB level 5 MAT-file") as caught:
        load_mat(path)
    assert "train_list.mat" in str(caught.value)


def test_too_short_file(tmp_path: Path) -> None:
    with pytest.raises(MatFileError, match="too short"):
        load_mat(_write(tmp_path, b"MATLAB"))


def test_hdf5_version_rejected(tmp_path: Path) -> None:
    header = bytearray(SCIPY_MIXED_PLAIN[:128])
    header[124:126] = struct.pack("<H", 0x0200)

    with pytest.raises(MatFileError, match="-v7.3"):
        load_mat(_write(tmp_path, bytes(header)))


def test_truncated_file(tmp_path: Path) -> None:
    with pytest.raises(MatFileError, match="truncated"):
        load_mat(_write(tmp_path, SCIPY_MIXED_PLAIN[:300]))


def test_damaged_compression(tmp_path: Path) -> None:
    data = bytearray(SCIPY_TRAIN_LIST_COMPRESSED)
    data[140:150] = bytes(10)

    with pytest.raises(MatFileError, match="damaged compressed element"):
        load_mat(_write(tmp_path, bytes(data)))


def test_cell_strings_rejects_numbers() -> None:
    with pytest.raises(MatFileError, match="cell array of strings"):
        cell_strings(np.zeros((2, 1)))
