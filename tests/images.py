"""Crafted image files for tests of hostile input."""
from __future__ import annotations

import io
import struct
import zipfile
import zlib


def crafted_png(width: int, height: int) -> bytes:
    """An 8-bit grayscale PNG whose header claims width x height; the pixel data is tiny (a
    pixel bomb in a few dozen bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def zeros_png(width: int, height: int, rgb: bool = True) -> bytes:
    """A real, decodable PNG of width x height black pixels, built a row at a time (an 8000
    x 8000 RGB one is about 190 kB and decodes to 192 MB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2 if rgb else 0, 0, 0, 0)
    row = bytes(1 + width * (3 if rgb else 1))  # filter type 0, then the row's bytes
    deflate = zlib.compressobj(9)
    idat = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def zeros_npz(path, x_train_shape: tuple[int, ...] = (1000, 1, 1000, 1000)) -> None:
    """An .npz upload whose x_train is uint8 zeros of x_train_shape (by default 1 GB that
    deflate makes about 1 MB of), written a slice at a time: the test never holds it."""
    import numpy as np

    def npy(array) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    count = 1
    for n in x_train_shape:
        count *= n
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": x_train_shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("x_train.npy", "w", force_zip64=True) as f:
            f.write(header.getvalue())
            block = bytes(16 * 2**20)
            for start in range(0, count, len(block)):
                f.write(block[:min(len(block), count - start)])
        labels = np.arange(x_train_shape[0]) % 2
        zf.writestr("y_train.npy", npy(labels))
        zf.writestr("x_test.npy", npy(np.zeros((2, *x_train_shape[1:]), np.uint8)))
        zf.writestr("y_test.npy", npy(np.arange(2)))
