"""Read MATLAB level 5 MAT-files (the format of `save -v6` and `save -v7`) without scipy.

Stanford Dogs stores its official split as `train_list.mat` and `test_list.mat`, each with a cell array
`file_list` of relative paths such as 'n02085620-Chihuahua/n02085620_5927.jpg'. This reader covers the
classes such files use: numeric and logical arrays, char arrays, cell arrays and structs, stored plainly
or zlib-compressed, in either byte order. The layout follows MathWorks' "MAT-File Format" document
(level 5). A file is a 128-byte header followed by data elements. Each element is an 8-byte tag (type,
byte count) and a payload padded to 8 bytes, or a "small" element whose tag packs up to 4 payload bytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

# Data types of the element tags (MAT-file level 5, table "MAT-File Data Types").
MI_INT8, MI_UINT8, MI_INT16, MI_UINT16, MI_INT32, MI_UINT32 = 1, 2, 3, 4, 5, 6
MI_SINGLE, MI_DOUBLE, MI_INT64, MI_UINT64 = 7, 9, 12, 13
MI_MATRIX, MI_COMPRESSED, MI_UTF8, MI_UTF16, MI_UTF32 = 14, 15, 16, 17, 18

_NUMPY_TYPE_OF_MI: dict[int, str] = {
    MI_INT8: "i1",
    MI_UINT8: "u1",
    MI_INT16: "i2",
    MI_UINT16: "u2",
    MI_INT32: "i4",
    MI_UINT32: "u4",
    MI_SINGLE: "f4",
    MI_DOUBLE: "f8",
    MI_INT64: "i8",
    MI_UINT64: "u8",
    MI_UTF8: "u1",
    MI_UTF16: "u2",
    MI_UTF32: "u4",
}

# Array classes stored in the array-flags sub-element (table "MATLAB Array Types").
MX_CELL, MX_STRUCT, MX_OBJECT, MX_CHAR, MX_SPARSE = 1, 2, 3, 4, 5
_NUMPY_TYPE_OF_MX: dict[int, str] = {
    6: "f8",  # mxDOUBLE_CLASS
    7: "f4",  # mxSINGLE_CLASS
    8: "i1",
    9: "u1",
    10: "i2",
    11: "u2",
    12: "i4",
    13: "u4",
    14: "i8",
    15: "u8",
}
_FLAG_COMPLEX = 0x0800
_FLAG_LOGICAL = 0x0200

HEADER_BYTES = 128


class MatFileError(ValueError):
    """Raised when a file is not a readable MATLAB level 5 MAT-file or uses an unsupported feature."""


def load_mat(path: str | Path, variable_names: Iterable[str] | None = None) -> dict[str, Any]:
    """Read the variables of a level 5 MAT-file into Python values.

    Numeric and logical arrays become numpy arrays shaped as in MATLAB. A char row becomes a `str` and a
    char matrix a list of row strings. A cell array becomes a numpy object array, a 1x1 struct a dict, and
    a larger struct array an object array of dicts. With `variable_names`, only those variables are decoded.
    Raises FileNotFoundError for a missing file and MatFileError for anything it cannot read.
    """
    path = Path(path)
    data = path.read_bytes()
    byte_order = _read_header(data, path)
    wanted = set(variable_names) if variable_names is not None else None

    variables: dict[str, Any] = {}
    position = HEADER_BYTES
    while position < len(data):
        mi_type, payload, position = _read_element(data, position, byte_order, path)
        if mi_type == MI_COMPRESSED:
            mi_type, payload = _decompress_element(payload, byte_order, path)
        if mi_type != MI_MATRIX:
            # Level 5 files contain only matrices at the top level; anything else is skipped.
            continue
        name, value = _parse_matrix(payload, byte_order, path, wanted)
        if wanted is None or name in wanted:
            variables[name] = value
    return variables


def cell_strings(value: Any) -> list[str]:
    """Flatten a cell array of strings (as `load_mat` returns it) into a list, in MATLAB's column order."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, np.ndarray) or value.dtype != object:
        raise MatFileError(f"Expected a cell array of strings, found {type(value).__name__}.")
    strings = []
    for item in value.flatten(order="F"):
        if isinstance(item, list):
            strings.extend(item)
        elif isinstance(item, str):
            strings.append(item)
        else:
            raise MatFileError(f"Expected only strings in the cell array, found {type(item).__name__}.")
    return strings


def _read_header(data: bytes, path: Path) -> str:
    """Check the 128-byte header and return the numpy byte-order character of the file."""
    if len(data) < HEADER_BYTES:
        raise MatFileError(f"'{path}' is too short ({len(data)} bytes) to be a MATLAB MAT-file.")
    endian = data[126:128]
    if endian == b"IM":
        byte_order = "<"
    elif endian == b"MI":
        byte_order = ">"
    else:
        raise MatFileError(
            f"'{path}' is not a MATLAB level 5 MAT-file (no 'IM'/'MI' byte-order mark at byte 126). "
            f"Level 4 files are not supported; re-save it in MATLAB with save(..., '-v7')."
        )
    version = struct.unpack(byte_order + "H", data[124:126])[0]
    if version != 0x0100:
        raise MatFileError(
            f"'{path}' is a MAT-file of version {version:#06x}; only level 5 (0x0100) is supported. "
            f"Files saved with '-v7.3' are HDF5: re-save with save(..., '-v7')."
        )
    return byte_order


def _read_element(data: bytes, position: int, byte_order: str, path: Path) -> tuple[int, bytes, int]:
    """Read one data element at `position`; return its type, its payload and the next element's position."""
    if position + 8 > len(data):
        raise MatFileError(f"'{path}' is truncated: a data element tag at byte {position} is incomplete.")
    first = struct.unpack_from(byte_order + "I", data, position)[0]
    if first >> 16:
        # Small data element: byte count in the upper 16 bits, type in the lower, payload in the next 4 bytes.
        byte_count, mi_type = first >> 16, first & 0xFFFF
        if byte_count > 4:
            raise MatFileError(f"'{path}' has an invalid small data element at byte {position}.")
        return mi_type, data[position + 4 : position + 4 + byte_count], position + 8

    mi_type = first
    byte_count = struct.unpack_from(byte_order + "I", data, position + 4)[0]
    start = position + 8
    end = start + byte_count
    if end > len(data):
        raise MatFileError(
            f"'{path}' is truncated: an element at byte {position} needs {byte_count} bytes, "
            f"but only {len(data) - start} remain."
        )
    # Compressed elements are not padded; all others end on an 8-byte boundary.
    next_position = end if mi_type == MI_COMPRESSED else start + (byte_count + 7) // 8 * 8
    return mi_type, data[start:end], next_position


def _decompress_element(payload: bytes, byte_order: str, path: Path) -> tuple[int, bytes]:
    try:
        inflated = zlib.decompress(payload)
    except zlib.error as error:
        raise MatFileError(f"'{path}' has a damaged compressed element: {error}.") from error
    mi_type, inner, _ = _read_element(inflated, 0, byte_order, path)
    return mi_type, inner


def _parse_matrix(payload: bytes, byte_order: str, path: Path, wanted: set[str] | None = None) -> tuple[str, Any]:
    """Decode the payload of one miMATRIX element into (variable name, value)."""
    if not payload:
        # An empty miMATRIX element is MATLAB's empty array [].
        return "", np.zeros((0, 0))

    _, flags, position = _read_element(payload, 0, byte_order, path)
    flag_word = struct.unpack(byte_order + "I", flags[:4])[0]
    array_class = flag_word & 0xFF
    _, dims_bytes, position = _read_element(payload, position, byte_order, path)
    dims = tuple(int(d) for d in np.frombuffer(dims_bytes, dtype=byte_order + "i4"))
    _, name_bytes, position = _read_element(payload, position, byte_order, path)
    name = name_bytes.decode("ascii", errors="replace")
    if wanted is not None and name not in wanted:
        return name, None

    if array_class in _NUMPY_TYPE_OF_MX:
        value = _parse_numeric(payload, position, byte_order, path, array_class, flag_word, dims)
    elif array_class == MX_CHAR:
        value = _parse_char(payload, position, byte_order, path, dims)
    elif array_class == MX_CELL:
        value = _parse_cell(payload, position, byte_order, path, dims)
    elif array_class in (MX_STRUCT, MX_OBJECT):
        if array_class == MX_OBJECT:
            _, _class_name, position = _read_element(payload, position, byte_order, path)
        value = _parse_struct(payload, position, byte_order, path, dims)
    else:
        kind = "sparse" if array_class == MX_SPARSE else f"class {array_class}"
        raise MatFileError(f"'{path}': variable '{name}' is a {kind} array, which this reader does not support.")
    return name, value


def _numbers(mi_type: int, raw: bytes, byte_order: str, path: Path) -> np.ndarray:
    code = _NUMPY_TYPE_OF_MI.get(mi_type)
    if code is None:
        raise MatFileError(f"'{path}' uses data type {mi_type} for array data, which is not a numeric type.")
    return np.frombuffer(raw, dtype=byte_order + code)


def _parse_numeric(
    payload: bytes,
    position: int,
    byte_order: str,
    path: Path,
    array_class: int,
    flag_word: int,
    dims: tuple[int, ...],
) -> np.ndarray:
    # MATLAB may store values in a smaller type than the class (doubles as miUINT8), so cast to the class.
    real_type, real_raw, position = _read_element(payload, position, byte_order, path)
    values = _numbers(real_type, real_raw, byte_order, path).astype(_NUMPY_TYPE_OF_MX[array_class])
    if flag_word & _FLAG_COMPLEX:
        imaginary_type, imaginary_raw, _ = _read_element(payload, position, byte_order, path)
        values = values + 1j * _numbers(imaginary_type, imaginary_raw, byte_order, path)
    if flag_word & _FLAG_LOGICAL:
        values = values.astype(bool)
    return values.reshape(dims, order="F")


def _parse_char(payload: bytes, position: int, byte_order: str, path: Path, dims: tuple[int, ...]) -> str | list[str]:
    count = int(np.prod(dims)) if dims else 0
    if count == 0:
        return ""
    mi_type, raw, _ = _read_element(payload, position, byte_order, path)
    if mi_type == MI_UTF8:
        characters = list(raw.decode("utf-8", errors="replace"))
    elif mi_type in (MI_UTF16, MI_UINT16, MI_INT16):
        characters = [chr(code) for code in np.frombuffer(raw, dtype=byte_order + "u2")]
    elif mi_type in (MI_UINT8, MI_INT8):
        characters = list(raw.decode("latin-1"))
    elif mi_type in (MI_UTF32, MI_UINT32, MI_INT32):
        characters = [chr(code) for code in np.frombuffer(raw, dtype=byte_order + "u4")]
    else:
        raise MatFileError(f"'{path}' stores characters as data type {mi_type}, which is not a text type.")
    if len(characters) != count:
        raise MatFileError(f"'{path}': a char array of size {dims} has {len(characters)} characters.")

    rows = dims[0]
    grid = np.array(characters, dtype=object).reshape((rows, count // rows), order="F")
    lines = ["".join(row) for row in grid]
    return lines[0] if rows == 1 else lines


def _parse_cell(payload: bytes, position: int, byte_order: str, path: Path, dims: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(dims)) if dims else 0
    cells = np.empty(count, dtype=object)
    for index in range(count):
        mi_type, inner, position = _read_element(payload, position, byte_order, path)
        if mi_type != MI_MATRIX:
            raise MatFileError(f"'{path}': cell {index} is data type {mi_type}, expected a matrix (14).")
        cells[index] = _parse_matrix(inner, byte_order, path)[1]
    return cells.reshape(dims, order="F")


def _parse_struct(payload: bytes, position: int, byte_order: str, path: Path, dims: tuple[int, ...]) -> Any:
    _, length_raw, position = _read_element(payload, position, byte_order, path)
    name_length = int(_numbers(MI_INT32, length_raw[:4], byte_order, path)[0])
    _, names_raw, position = _read_element(payload, position, byte_order, path)
    field_names = [] if name_length == 0 else [
        names_raw[start : start + name_length].split(b"\0", 1)[0].decode("ascii", errors="replace")
        for start in range(0, len(names_raw), name_length)
    ]

    count = int(np.prod(dims)) if dims else 0
    records = np.empty(count, dtype=object)
    for index in range(count):
        record = {}
        for field in field_names:
            _, inner, position = _read_element(payload, position, byte_order, path)
            record[field] = _parse_matrix(inner, byte_order, path)[1]
        records[index] = record
    if count == 1:
        return records[0]
    return records.reshape(dims, order="F")
