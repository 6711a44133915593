"""Images for training and serving alike: safe decoding, uint8 (C, H, W), normalisation."""
from __future__ import annotations

import ctypes
import io
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from core.errors import TooLarge

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_WIDE_GRAY = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class NotAnImage(Exception):
    """Bytes Pillow cannot open or decode; the message names the image."""


class ImageTooLarge(TooLarge):
    """An image with more pixels than the limit (checked before it is decoded)."""


def open_image(source: bytes | BinaryIO, max_pixels: int, name: str = "image") -> Image.Image:
    """Pillow's lazy image: the header is read and the pixel count checked, nothing decoded
    yet (load_image decodes it). A file given must stay open until then."""
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name}: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise NotAnImage(f"{name} is not an image: not decodable by Pillow") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"{name} is {width}x{height} = {width * height} pixels; "
                            f"the limit is {max_pixels} pixels")
    return image


def load_image(image: Image.Image, name: str = "image") -> Image.Image:
    """Decode an open_image() result (its pixel count was checked when it was opened)."""
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name}: {exc}") from None
    except Exception:
        raise NotAnImage(f"{name} is not an image: not decodable (truncated or corrupt)") from None
    return image


def decode_image(data: bytes, max_pixels: int, name: str = "image") -> Image.Image:
    """Open bytes with Pillow; the pixel count is checked before anything is decoded."""
    return load_image(open_image(data, max_pixels, name), name)


def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (AttributeError, OSError):
        return None


_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Hand memory freed by this thread back to the system. glibc keeps what a thread freed
    in that thread's arena, and a large image leaves tens of MB behind that the process
    would hold long after the request; to be called from the thread that decoded."""
    if _TRIM is not None:
        _TRIM(0)


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


def to_tensor(image: Image.Image, shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 (C, H, W) in a job's stored shape: its channels and its size."""
    channels, height, width = shape
    return torch.from_numpy(to_uint8(image, channels, (width, height)).copy())


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1] -> per-channel standardised: training and /predict alike."""
    return images.float().div_(255).sub_(mean).div_(std)
