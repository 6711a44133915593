"""Turning an upload (ImageFolder archive or .npz) into uint8 tensors, validating as it goes."""
from __future__ import annotations

import math
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.imagedata import Split
from core.images import ImageTooLarge, NotAnImage, channels_of, decode_image, to_uint8
from core.uploads.archives import (
    Entry,
    Limits,
    UploadRejected,
    detect_kind,
    open_entries,
)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class UploadOptions:
    test_fraction: float = 0.1
    resize: tuple[int, int] | None = None  # (height, width)
    channels: int | None = None  # 1 or 3: convert every image; None: they must agree


@dataclass
class Materialized:
    layout: str  # split | single | npz
    classes: list[str]
    train: Split
    test: Split
    skipped: int = 0


def materialize(path: Path, options: UploadOptions, limits: Limits,
                progress: Progress = lambda done, total: None) -> Materialized:
    kind = detect_kind(path)
    if kind == "npz":
        return _from_npz(path, limits)
    with open_entries(path, kind, limits) as entries:
        return _from_image_folder(entries, options, limits, progress)


# ---- ImageFolder archives -----------------------------------------------------------------

def _ignored(path: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in path.split("/"))


def _strip_common_root(paths: list[str]) -> int:
    """How many leading folders the images share (a tarball of `cifar10/train/...`),
    judged by the paths inside them: a README beside the folder does not count."""
    depth = 0
    while True:
        inside = [p for p in paths if p.count("/") > depth]
        heads = {p.split("/")[depth] for p in inside}
        if len(heads) != 1 or heads & {"train", "test"}:
            return depth
        if not any(p.count("/") >= depth + 2 for p in inside):
            return depth
        depth += 1


def _plan(entries: list[Entry], options: UploadOptions):
    """Assign each entry to (split, class); returns (layout, [(entry, split, class)], skipped)."""
    files = [e for e in entries if not _ignored(e.path)]
    if not files:
        raise UploadRejected("the archive holds no images")
    strip = _strip_common_root([e.path for e in files])
    parts = [(e, e.path.split("/")[strip:]) for e in files]
    split_layout = any(p[0] in ("train", "test") and len(p) > 1 for _, p in parts)
    planned, skipped = [], 0
    for entry, p in parts:
        if len(p) <= 1:  # a README or LICENSE beside the folders
            skipped += 1
            continue
        if split_layout:
            if len(p) != 3 or p[0] not in ("train", "test"):
                raise UploadRejected(f"unexpected entry {entry.path!r}: expected "
                                     "train/<class>/<image> and test/<class>/<image>")
            planned.append((entry, p[0], p[1]))
        else:
            if len(p) != 2:
                raise UploadRejected(f"unexpected entry {entry.path!r}: expected <class>/<image> "
                                     "(or train/<class>/<image> and test/<class>/<image>)")
            planned.append((entry, None, p[0]))
    return ("split" if split_layout else "single"), planned, skipped


class _Decoder:
    """Decodes images to uint8 (C, H, W), holding every image to one mode and size."""

    def __init__(self, options: UploadOptions, limits: Limits):
        self.options, self.limits = options, limits
        self.channels = options.channels
        self.size = (options.resize[1], options.resize[0]) if options.resize else None  # (w, h)
        self.first: str | None = None
        self.first_mode: str | None = None

    def __call__(self, name: str, data: bytes) -> np.ndarray:
        try:
            image = decode_image(data, self.limits.max_image_pixels, name)
        except (ImageTooLarge, NotAnImage) as exc:
            raise UploadRejected(str(exc)) from None
        channels = channels_of(image)
        if self.first is None:
            self.first, self.first_mode = name, image.mode
            if self.channels is None:
                self.channels = channels
        elif self.options.channels is None and channels != self.channels:
            raise UploadRejected(
                f"mixed image modes: {name} is {image.mode} but {self.first} is "
                f"{self.first_mode}; re-encode them or declare channels=1 or 3")
        if self.size is None:
            self.size = image.size
        elif image.size != self.size and self.options.resize is None:
            raise UploadRejected(
                f"mixed image sizes: {name} is {image.size[0]}x{image.size[1]} but "
                f"{self.first} is {self.size[0]}x{self.size[1]}; declare resize=HxW")
        return to_uint8(image, self.channels, self.size)


def _from_image_folder(entries: list[Entry], options: UploadOptions, limits: Limits,
                       progress: Progress) -> Materialized:
    layout, planned, skipped = _plan(entries, options)
    decode = _Decoder(options, limits)
    images: list[np.ndarray] = []
    total, last_report = len(planned), 0.0
    for done, (entry, _split, _cls) in enumerate(planned, start=1):  # archive order: no seeking
        images.append(decode(entry.path, entry.read()))
        if time.monotonic() - last_report >= 1.0 or done == total:
            progress(done, total)
            last_report = time.monotonic()
    if layout == "split":
        classes = sorted({c for _, s, c in planned if s == "train"})
        extra = sorted({c for _, s, c in planned if s == "test"} - set(classes))
        if extra:
            raise UploadRejected(f"test classes without train images: {', '.join(extra)}")
        splits = [s for _, s, _ in planned]
    else:
        classes = sorted({c for _, _, c in planned})
        splits = _stratified_split([c for _, _, c in planned], options.test_fraction)
    _check_classes(classes)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[c] for _, _, c in planned], dtype=np.int64)
    # np.stack keeps each (C, H, W) view's HWC strides; training wants NCHW in memory.
    stacked = np.ascontiguousarray(np.stack(images))
    train_mask = np.array([s == "train" for s in splits])
    if not train_mask.any() or train_mask.all():
        raise UploadRejected("the dataset needs both train and test images "
                             "(a test/ folder, or test_fraction > 0 with 2+ images per class)")
    return Materialized(layout, classes,
                        Split(torch.from_numpy(stacked[train_mask]), torch.from_numpy(labels[train_mask])),
                        Split(torch.from_numpy(stacked[~train_mask]), torch.from_numpy(labels[~train_mask])),
                        skipped)


def _stratified_split(labels: list[str], test_fraction: float) -> list[str]:
    """Reproducible per-class split (seed 0): round(n * fraction) of each class to test."""
    rng = np.random.default_rng(0)
    splits = ["train"] * len(labels)
    by_class: dict[str, list[int]] = {}
    for i, c in enumerate(labels):
        by_class.setdefault(c, []).append(i)
    for c in sorted(by_class):
        members = by_class[c]
        n_test = min(len(members) - 1, max(1, round(len(members) * test_fraction)))
        for i in rng.permutation(members)[:n_test]:
            splits[int(i)] = "test"
    return splits


def _check_classes(classes: list[str]) -> None:
    if len(classes) < 2:
        raise UploadRejected(f"a dataset needs at least 2 classes; found {len(classes)}"
                             + (f" ({classes[0]})" if classes else ""))


# ---- .npz ---------------------------------------------------------------------------------

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _from_npz(path: Path, limits: Limits) -> Materialized:
    with open_entries(path, "npz", limits) as entries:
        names = {e.path for e in entries}
        missing = [k for k in NPZ_KEYS if f"{k}.npy" not in names]
        if missing:
            raise UploadRejected(f"the .npz lacks {', '.join(missing)} (it needs x_train, "
                                 "y_train, x_test, y_test and may have classes)")
    _check_npz_headers(path, limits)
    with np.load(path, allow_pickle=False) as npz:
        try:
            arrays = {k: npz[k] for k in NPZ_KEYS}
            classes_array = npz["classes"] if "classes" in npz.files else None
        except ValueError as exc:  # object arrays need pickle: refused
            raise UploadRejected(f"the .npz holds an array numpy cannot load without pickle "
                                 f"({exc})") from None
    train_x, test_x = _npz_images("x_train", arrays["x_train"]), _npz_images("x_test", arrays["x_test"])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise UploadRejected(f"x_train images are {tuple(train_x.shape[1:])} (C, H, W) but "
                             f"x_test images are {tuple(test_x.shape[1:])}")
    train_y = _npz_labels("y_train", arrays["y_train"], len(train_x))
    test_y = _npz_labels("y_test", arrays["y_test"], len(test_x))
    top = int(torch.cat([train_y, test_y]).max().item())  # both are non-empty
    if classes_array is not None:
        classes = [str(c) for c in classes_array.tolist()]
        if top >= len(classes):
            raise UploadRejected(f"label {top} is out of range for {len(classes)} classes "
                                 f"(labels must be 0..{len(classes) - 1})")
    else:
        classes = [str(i) for i in range(top + 1)]
    _check_classes(classes)
    return Materialized("npz", classes, Split(train_x, train_y), Split(test_x, test_y))


def _check_npz_headers(path: Path, limits: Limits) -> None:
    """Refuse arrays whose declared size is over the cap before numpy allocates them."""
    total = 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            with zf.open(info) as f:
                try:
                    version = np.lib.format.read_magic(f)
                    shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0(f))
                except ValueError as exc:
                    raise UploadRejected(f"{info.filename} is not a numpy array ({exc})") from None
            if any(d < 0 for d in shape):
                raise UploadRejected(f"{info.filename} declares a negative dimension {shape}")
            if dtype.hasobject:
                raise UploadRejected(f"{info.filename} holds Python objects; only numeric "
                                     "arrays (and a string array of classes) are accepted")
            total += math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if total > limits.max_unpacked_bytes:
        raise UploadRejected(f"the .npz arrays take {total} bytes; the limit is "
                             f"{limits.max_unpacked_bytes} (TRAINHUB_DATASET_MAX_UNPACKED_BYTES)")


def _npz_images(key: str, x: np.ndarray) -> torch.Tensor:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif not (x.ndim == 4 and x.shape[1] in (1, 3)):
        raise UploadRejected(f"{key} has shape {x.shape}; expected (N, H, W), (N, H, W, C) or "
                             "(N, C, H, W) with C = 1 or 3")
    if len(x) == 0:
        raise UploadRejected(f"{key} is empty")
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise UploadRejected(f"{key} is float with values outside [0, 1] (or NaN)")
        x = np.rint(x * 255)
    elif np.issubdtype(x.dtype, np.integer):
        if x.min() < 0 or x.max() > 255:
            raise UploadRejected(f"{key} has values outside 0..255")
    else:
        raise UploadRejected(f"{key} has dtype {x.dtype}; expected uint8 or float in [0, 1]")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8))


def _npz_labels(key: str, y: np.ndarray, n: int) -> torch.Tensor:
    if y.ndim != 1 or len(y) != n:
        raise UploadRejected(f"{key} has shape {y.shape}; expected ({n},), one label per image")
    if not np.issubdtype(y.dtype, np.integer):
        raise UploadRejected(f"{key} has dtype {y.dtype}; labels must be integers")
    if len(y) and y.min() < 0:
        raise UploadRejected(f"{key} has negative labels")
    return torch.from_numpy(y.astype(np.int64))
