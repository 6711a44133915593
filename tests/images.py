"""Crafted image files for tests of hostile input."""
from __future__ import annotations

import struct
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
