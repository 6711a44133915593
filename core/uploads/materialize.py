"""Turning an upload (ImageFolder archive or .npz) into uint8 tensors, validating as it goes.

Everything the headers tell is checked before anything is decoded: the layout, the classes,
and the memory decoding will take against TRAINHUB_DATASET_MAX_DECODED_BYTES (images x C x H
x W after any resize for an archive, whose first image's header gives C, H and W; the arrays
as stored plus their conversion copies for an .npz). Images are decoded one at a time
straight into the dataset's tensors."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.image_decode import (
    ImageTooLarge,
    NotAnImage,
    channels_of,
    decode_image,
    open_image,
    to_uint8,
)
from core.tensor_datasets import Split
from core.uploads.archives import (
    CORRUPT,
    Entry,
    Limits,
    Source,
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
    """The upload decoded; every check its headers allow (the memory budget included) runs
    before any image or array is decoded."""
    kind = detect_kind(path)
    if kind == "npz":
        return _from_npz(path, limits)
    with open_entries(path, kind, limits) as entries:
        return _decode_folder(_plan_folder(entries, options, limits), options, limits,
                              progress)


def check_headers(source: Source, options: UploadOptions, limits: Limits) -> str:
    """What an upload's headers tell without decoding it, for the API to refuse it at once:
    its kind, and for a .zip or .npz (whose directory is at hand) its entries, layout,
    classes and memory budget. A tar's entries are left to the worker: walking a .tar.gz
    means decompressing all of it. Returns the kind; UploadRejected says what is wrong."""
    try:
        kind = detect_kind(source)
        if kind == "npz":
            _plan_npz(source, limits)
        elif kind == "zip":
            with open_entries(source, kind, limits) as entries:
                _plan_folder(entries, options, limits)
    except CORRUPT as exc:
        raise UploadRejected(f"the archive is damaged ({type(exc).__name__}: {exc})") from None
    return kind


def _over_budget(need: int, what: str, limits: Limits) -> None:
    if need > limits.max_decoded_bytes:
        raise UploadRejected(f"decoding it would take about {need} bytes of memory ({what}); "
                             f"the limit is {limits.max_decoded_bytes} bytes "
                             "(TRAINHUB_DATASET_MAX_DECODED_BYTES)")


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


@dataclass
class _FolderPlan:
    """An ImageFolder archive as its headers describe it, before anything is decoded."""
    layout: str
    planned: list  # [(entry, split, class)] in archive order
    skipped: int
    classes: list[str]
    splits: list[str]  # train or test, one per planned entry
    first: str  # the first image: its mode and size are every image's
    first_mode: str
    channels: int
    size: tuple[int, int]  # (width, height) of every decoded image


def _plan_folder(entries: list[Entry], options: UploadOptions, limits: Limits) -> _FolderPlan:
    layout, planned, skipped = _plan(entries, options)
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
    if "train" not in splits or "test" not in splits:
        raise UploadRejected("the dataset needs both train and test images "
                             "(a test/ folder, or test_fraction > 0 with 2+ images per class)")
    first = planned[0][0]
    with first.open() as stream:
        try:
            header = open_image(stream, limits.max_image_pixels, first.path)
        except (ImageTooLarge, NotAnImage) as exc:
            raise UploadRejected(str(exc)) from None
        mode, size = header.mode, header.size
    channels = options.channels or channels_of(header)
    if options.resize:
        size = (options.resize[1], options.resize[0])
    plan = _FolderPlan(layout, planned, skipped, classes, splits, first.path, mode, channels,
                       size)
    # Decoded straight into the dataset's tensors, one entry read whole at a time.
    images = len(planned) * channels * size[0] * size[1]
    biggest = max(e.size for e, _, _ in planned)
    _over_budget(images + biggest, f"{len(planned)} images of {channels}x{size[1]}x{size[0]} "
                                   f"as bytes, {images}, plus the largest entry, {biggest}",
                 limits)
    return plan


class _Decoder:
    """Decodes images to uint8 (C, H, W), holding every image to the first one's mode and
    size (unless channels or resize were declared)."""

    def __init__(self, plan: _FolderPlan, options: UploadOptions, limits: Limits):
        self.plan, self.options, self.limits = plan, options, limits

    def __call__(self, name: str, data: bytes) -> np.ndarray:
        plan = self.plan
        try:
            image = decode_image(data, self.limits.max_image_pixels, name)
        except (ImageTooLarge, NotAnImage) as exc:
            raise UploadRejected(str(exc)) from None
        if self.options.channels is None and channels_of(image) != plan.channels:
            raise UploadRejected(
                f"mixed image modes: {name} is {image.mode} but {plan.first} is "
                f"{plan.first_mode}; re-encode them or declare channels=1 or 3")
        if image.size != plan.size and self.options.resize is None:
            raise UploadRejected(
                f"mixed image sizes: {name} is {image.size[0]}x{image.size[1]} but "
                f"{plan.first} is {plan.size[0]}x{plan.size[1]}; declare resize=HxW")
        return to_uint8(image, plan.channels, plan.size)


def _decode_folder(plan: _FolderPlan, options: UploadOptions, limits: Limits,
                   progress: Progress) -> Materialized:
    decode = _Decoder(plan, options, limits)
    index = {c: i for i, c in enumerate(plan.classes)}
    labels = torch.tensor([index[c] for _, _, c in plan.planned], dtype=torch.int64)
    in_train = torch.tensor([s == "train" for s in plan.splits])
    shape = (plan.channels, plan.size[1], plan.size[0])
    # NCHW and contiguous, as training reads them; filled in place, never stacked.
    arrays = {"train": np.empty((int(in_train.sum()), *shape), dtype=np.uint8),
              "test": np.empty((int((~in_train).sum()), *shape), dtype=np.uint8)}
    rows = {"train": 0, "test": 0}
    total, last_report = len(plan.planned), 0.0
    for done, ((entry, _split, _cls), split) in enumerate(zip(plan.planned, plan.splits),
                                                          start=1):  # archive order
        arrays[split][rows[split]] = decode(entry.path, entry.read())
        rows[split] += 1
        if time.monotonic() - last_report >= 1.0 or done == total:
            progress(done, total)
            last_report = time.monotonic()
    return Materialized(plan.layout, plan.classes,
                        Split(torch.from_numpy(arrays["train"]), labels[in_train]),
                        Split(torch.from_numpy(arrays["test"]), labels[~in_train]), plan.skipped)


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


def _plan_npz(source: Source, limits: Limits) -> dict[str, _Array]:
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
    _over_budget(total + copies + labels, f"its arrays as stored, {total}, plus their "
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


def _from_npz(path: Path, limits: Limits) -> Materialized:
    _plan_npz(path, limits)
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
    _check_classes(classes)
    return Materialized("npz", classes, Split(train_x, train_y), Split(test_x, test_y))


def _npz_images(key: str, x: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W); _plan_npz checked the shape and dtype. Floats are scaled a chunk
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
