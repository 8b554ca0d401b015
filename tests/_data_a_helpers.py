"""Shared test helpers of the data modules: MAT-file fixtures and a MATLAB-style MAT-file writer."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import numpy as np

# Written by scipy 1.17.1: scipy.io.savemat(f, {"file_list": ..., "annotation_list": ..., "labels": ...},
# format="5", do_compression=True), where file_list is a 3x1 cell of the three training paths below and
# labels is the 3x1 double array [1; 1; 2]. Stanford Dogs' train_list.mat has the same three variables.
SCIPY_TRAIN_LIST_COMPRESSED = base64.b64decode(
    "TUFUTEFCIDUuMCBNQVQtZmlsZSBQbGF0Zm9ybTogcG9zaXgsIENyZWF0ZWQgb246IEZyaSBEZWMgIDQgMjA6NDY6MTkgMjAyNgAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABSU0PAAAAeQAAAHic42NgYIhgZGBgA9Ic"
    "QAxkggErlM8MFQNhTiBOy8xJjc/JLC6BquMD6WdA6GdB0w/Sp4xkrgCUn2dgZGBhamZkoOuckZlRmghE+nCxeAO9rIJ0GppvSJL5"
    "qmjmq8LNtzQ20/VNzClJLU6NT8lP14eLwn0AALuvJa0PAAAAfwAAAHic42NgYPBgZGBgA9IcQAxkggErlM8MFQNhfiBOzMvLL0ks"
    "yczPi8/JLC5h4AOKBTAg9LOg6Qfpk0cyVwDKzzMwMrAwNTMy0HXOyMwoTQQifbhYvAGNzDUEmxtBwFxFNHMV4eZaGpvp+ibmlKQW"
    "p8an5Kfrw0WBLoYAAIRaI8kPAAAAMwAAAHic42NgYAgAYjYg5oDSIMAK5TMDMSMUg+RyEpNSc4oZGDiBbAkGGPhgj0ozOAAAqucF"
    "vQ=="
)
SCIPY_TRAIN_FILES = [
    "n02085620-Chihuahua/n02085620_0.jpg",
    "n02085620-Chihuahua/n02085620_1.jpg",
    "n02085936-Maltese_dog/n02085936_0.jpg",
]

# Written by scipy 1.17.1 without compression: ints = int16 [[0 1 2]; [3 4 5]], flag = logical [true false],
# cplx = 1+2i, charmat = ['ab'; 'cd'], s = struct with a = 1.5 and b = 'text', name = 'größe'.
SCIPY_MIXED_PLAIN = base64.b64decode(
    "TUFUTEFCIDUuMCBNQVQtZmlsZSBQbGF0Zm9ybTogcG9zaXgsIENyZWF0ZWQgb246IEZyaSBEZWMgIDQgMjA6NDY6MTkgMjAyNgAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABSU0OAAAAQAAAAAYAAAAIAAAACgAAAAAA"
    "AAAFAAAACAAAAAIAAAADAAAAAQAEAGludHMDAAAADAAAAAAAAwABAAQAAgAFAAAAAAAOAAAAMAAAAAYAAAAIAAAACQIAAAAAAAAF"
    "AAAACAAAAAEAAAACAAAAAQAEAGZsYWcCAAIAAQAAAA4AAABIAAAABgAAAAgAAAAGCAAAAAAAAAUAAAAIAAAAAQAAAAEAAAABAAQA"
    "Y3BseAkAAAAIAAAAAAAAAAAA8D8JAAAACAAAAAAAAAAAAABADgAAADgAAAAGAAAACAAAAAQAAAAAAAAABQAAAAgAAAACAAAAAgAA"
    "AAEAAAAHAAAAY2hhcm1hdAAQAAQAYWNiZA4AAACwAAAABgAAAAgAAAACAAAAAAAAAAUAAAAIAAAAAQAAAAEAAAABAAEAcwAAAAUA"
    "BAACAAAAAQAEAGEAYgAOAAAAOAAAAAYAAAAIAAAABgAAAAAAAAAFAAAACAAAAAEAAAABAAAAAQAAAAAAAAAJAAAACAAAAAAAAAAA"
    "APg/DgAAADAAAAAGAAAACAAAAAQAAAAAAAAABQAAAAgAAAABAAAABAAAAAEAAAAAAAAAEAAEAHRleHQOAAAAOAAAAAYAAAAIAAAA"
    "BAAAAAAAAAAFAAAACAAAAAEAAAAFAAAAAQAEAG5hbWUQAAAABwAAAGdyw7bDn2UA"
)


class MatlabStyleWriter:
    """Level 5 MAT-file writer with MATLAB's habits that scipy lacks.

    Char data is UTF-16 (miUINT16), whole-number doubles are stored as miUINT8, payloads of up to 4 bytes
    use small data elements, and the byte order may be big-endian. Only str, list (cell) and numbers.
    """

    def __init__(self, byte_order: str = "<", compress: bool = True) -> None:
        self.byte_order = byte_order
        self.compress = compress

    def file(self, variables: dict[str, object]) -> bytes:
        text = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024"
        header = text.ljust(116, b" ") + bytes(8)
        header += struct.pack(self.byte_order + "H", 0x0100)
        header += b"IM" if self.byte_order == "<" else b"MI"
        body = b""
        for name, value in variables.items():
            element = self.element(14, self.matrix(name, value))
            body += self.element(15, zlib.compress(element), pad=False) if self.compress else element
        return header + body

    def element(self, mi_type: int, payload: bytes, pad: bool = True) -> bytes:
        if pad and 0 < len(payload) <= 4:
            packed = struct.pack(self.byte_order + "I", (len(payload) << 16) | mi_type)
            return packed + payload.ljust(4, b"\0")
        tag = struct.pack(self.byte_order + "II", mi_type, len(payload))
        padding = (-len(payload)) % 8 if pad else 0
        return tag + payload + bytes(padding)

    def matrix(self, name: str, value: object) -> bytes:
        if isinstance(value, str):
            array_class, dims = 4, (1, len(value))
            data = self.element(4, np.array([ord(c) for c in value], dtype=self.byte_order + "u2").tobytes())
        elif isinstance(value, list):
            array_class, dims = 1, (len(value), 1)
            data = b"".join(self.element(14, self.matrix("", item)) for item in value)
        else:
            numbers = np.asarray(value, dtype=np.float64).reshape(-1, 1)
            array_class, dims = 6, numbers.shape
            data = self.element(2, numbers.astype(np.uint8).tobytes())
        flags = self.element(6, struct.pack(self.byte_order + "II", array_class, 0))
        dimensions = self.element(5, struct.pack(self.byte_order + "ii", *dims))
        return flags + dimensions + self.element(1, name.encode("ascii")) + data


def write_split_lists(folder: Path, train_files: list[str], test_files: list[str]) -> Path:
    """Write Stanford-Dogs-style `train_list.mat` and `test_list.mat` into `folder` and return `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = MatlabStyleWriter()
    for name, files in (("train_list.mat", train_files), ("test_list.mat", test_files)):
        labels = np.ones(len(files))
        (folder / name).write_bytes(writer.file({"file_list": files, "labels": labels}))
    return folder
