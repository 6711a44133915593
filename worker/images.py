"""Pillow image -> uint8 (C, H, W), the same for uploaded datasets and /predict."""
from __future__ import annotations

import numpy as np
from PIL import Image

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_WIDE_GRAY = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def channels_of(image: Image.Image) -> int:
    return 1 if image.mode in GRAY_MODES else 3


def to_uint8(image: Image.Image, channels: int,
             size: tuple[int, int] | None = None) -> np.ndarray:
    """(channels, H, W) uint8, resized (bilinear) to size=(width, height) when given.

    Converted to L or RGB before resizing: Pillow resizes palette and 1-bit images by
    nearest neighbour only. 16-bit and float grayscale are scaled to 0-255, not clipped.
    """
    if image.mode in _WIDE_GRAY:
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if image.mode == "F" and values.max(initial=0) <= 1.0 else (
            255.0 if values.max(initial=0) <= 255 else 65535.0)
        image = Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255)
                                .astype(np.uint8), "L")
    if image.mode not in ("L", "RGB"):
        # Every mode Pillow reads converts to RGB (LAB, CMYK, YCbCr, P, RGBA, LA, 1, ...).
        image = image.convert("RGB")
    image = image.convert("L" if channels == 1 else "RGB")
    if size is not None and image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
