""".npz uploads (x_train, y_train, x_test, y_test): the arrays' headers checked (shapes,
dtypes, memory) before any is read, then converted to uint8 (C, H, W) a chunk at a time."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.tensor_datasets import Split
from core.uploads.archives import (
    Entry,
    Limits,
    Source,
    UploadRejected,
    open_entries,
)
from core.uploads.decoded import Materialized, check_classes, over_budget

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_CHUNK_BYTES = 4 * 2**20  # float images are converted this much at a time


@dataclass(frozen=True)
class _Array:
    """An .npy entry's header: what numpy would allocate for it."""
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # Python ints: no overflow


def plan_npz(source: Source, limits: Limits) -> dict[str, _Array]:
    """Every check an .npz's array headers allow, the memory budget included: nothing is
    loaded until they pass."""
    with open_entries(source, "npz", limits) as entries:
        names = {e.path for e in entries}
        missing = [k for k in NPZ_KEYS if f"{k}.npy" not in names]
        if missing:
            raise UploadRejected(f"the .npz lacks {', '.join(missing)} (it needs x_train, "
                                 "y_train, x_test, y_test and may have classes)")
        arrays = {e.path.removesuffix(".npy"): _npy_header(e) for e in entries}
    total = sum(a.nbytes for a in arrays.values())
    if total > limits.max_unpacked_bytes:
        raise UploadRejected(f"the .npz arrays take {total} bytes; the limit is "
                             f"{limits.max_unpacked_bytes} (TRAINHUB_DATASET_MAX_UNPACKED_BYTES)")
    train, test = (_npz_image_shape(k, arrays[k]) for k in ("x_train", "x_test"))
    if train[1:] != test[1:]:
        raise UploadRejected(f"x_train images are {train[1:]} (C, H, W) but x_test images "
                             f"are {test[1:]}")
    for key, images in (("y_train", train), ("y_test", test)):
        y = arrays[key]
        if len(y.shape) != 1 or y.shape[0] != images[0]:
            raise UploadRejected(f"{key} has shape {y.shape}; expected ({images[0]},), one "
                                 "label per image")
        if not np.issubdtype(y.dtype, np.integer):
            raise UploadRejected(f"{key} has dtype {y.dtype}; labels must be integers")
    # Loaded as stored, then each image array converted to a uint8 copy (none needed for
    # uint8 already in N, C, H, W order) and the labels to int64.
    copies = sum(math.prod(shape) for key, shape in (("x_train", train), ("x_test", test))
                 if _needs_copy(arrays[key]))
    labels = 8 * (train[0] + test[0])
    over_budget(total + copies + labels, f"its arrays as stored, {total}, plus their "
                                          f"conversion copies, {copies + labels}", limits)
    return arrays


def _npy_header(entry: Entry) -> _Array:
    with entry.open() as f:
        try:
            version = np.lib.format.read_magic(f)
            shape, fortran_order, dtype = (np.lib.format.read_array_header_1_0(f)
                                      if version == (1, 0)
                                      else np.lib.format.read_array_header_2_0(f))
        except ValueError as exc:
            raise UploadRejected(f"{entry.path} is not a numpy array ({exc})") from None
    if any(d < 0 for d in shape):
        raise UploadRejected(f"{entry.path} declares a negative dimension {shape}")
    if dtype.hasobject:
        raise UploadRejected(f"{entry.path} holds Python objects; only numeric arrays (and "
                             "a string array of classes) are accepted")
    return _Array(tuple(shape), dtype, fortran_order)


def _npz_image_shape(key: str, x: _Array) -> tuple[int, int, int, int]:
    """(N, C, H, W) of an image array, or UploadRejected naming it."""
    shape = x.shape
    if len(shape) == 3:
        shape = (shape[0], 1, shape[1], shape[2])
    elif len(shape) == 4 and shape[3] in (1, 3):
        shape = (shape[0], shape[3], shape[1], shape[2])
    elif not (len(shape) == 4 and shape[1] in (1, 3)):
        raise UploadRejected(f"{key} has shape {x.shape}; expected (N, H, W), (N, H, W, C) or "
                             "(N, C, H, W) with C = 1 or 3")
    if shape[0] == 0:
        raise UploadRejected(f"{key} is empty")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise UploadRejected(f"{key} has dtype {x.dtype}; expected uint8 or float in [0, 1]")
    return shape  # type: ignore[return-value]


def _needs_copy(x: _Array) -> bool:
    """False for uint8 whose (N, C, H, W) view is the stored array itself."""
    channels_last = len(x.shape) == 4 and x.shape[3] in (1, 3)
    return x.dtype != np.uint8 or x.fortran_order or (channels_last and x.shape[3] != 1)


def from_npz(path: Path, limits: Limits) -> Materialized:
    plan_npz(path, limits)
    with np.load(path, allow_pickle=False) as npz:
        try:
            train_x = _npz_images("x_train", npz["x_train"])
            test_x = _npz_images("x_test", npz["x_test"])
            train_y = _npz_labels("y_train", npz["y_train"])
            test_y = _npz_labels("y_test", npz["y_test"])
            classes_array = npz["classes"] if "classes" in npz.files else None
        except ValueError as exc:  # object arrays need pickle: refused
            raise UploadRejected(f"the .npz holds an array numpy cannot load without pickle "
                                 f"({exc})") from None
    top = int(torch.cat([train_y, test_y]).max().item())  # both are non-empty
    if classes_array is not None:
        classes = [str(c) for c in classes_array.tolist()]
        if top >= len(classes):
            raise UploadRejected(f"label {top} is out of range for {len(classes)} classes "
                                 f"(labels must be 0..{len(classes) - 1})")
    else:
        classes = [str(i) for i in range(top + 1)]
    check_classes(classes)
    return Materialized("npz", classes, Split(train_x, train_y), Split(test_x, test_y))


def _npz_images(key: str, x: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W); plan_npz checked the shape and dtype. Floats are scaled a chunk
    at a time: their temporaries stay small whatever the array's size."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if np.issubdtype(x.dtype, np.integer):
        if x.min() < 0 or x.max() > 255:
            raise UploadRejected(f"{key} has values outside 0..255")
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8))
    out = np.empty(x.shape, dtype=np.uint8)
    rows = max(1, _CHUNK_BYTES // max(1, x[0].nbytes))
    for start in range(0, len(x), rows):
        chunk = x[start:start + rows]
        if not np.isfinite(chunk).all() or chunk.min() < 0 or chunk.max() > 1:
            raise UploadRejected(f"{key} is float with values outside [0, 1] (or NaN)")
        out[start:start + rows] = np.rint(chunk * 255)
    return torch.from_numpy(out)


def _npz_labels(key: str, y: np.ndarray) -> torch.Tensor:
    if len(y) and y.min() < 0:
        raise UploadRejected(f"{key} has negative labels")
    return torch.from_numpy(y.astype(np.int64))
