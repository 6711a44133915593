"""ImageFolder archives (.zip, .tar, .tar.gz): the plan from the entries' paths and the first
image's header (layout, classes, split, memory), then the images decoded one at a time straight
into the dataset's tensors."""
from __future__ import annotations

import time
from dataclasses import dataclass

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
from core.uploads.archives import Entry, Limits, UploadRejected
from core.uploads.decoded import (
    Materialized,
    Progress,
    UploadOptions,
    check_classes,
    over_budget,
)


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


def plan_folder(entries: list[Entry], options: UploadOptions, limits: Limits) -> _FolderPlan:
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
    check_classes(classes)
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
    over_budget(images + biggest, f"{len(planned)} images of {channels}x{size[1]}x{size[0]} "
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


def decode_folder(plan: _FolderPlan, options: UploadOptions, limits: Limits,
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
