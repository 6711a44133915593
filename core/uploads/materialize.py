"""Turning an upload (ImageFolder archive or .npz) into uint8 tensors, validating as it goes.

Everything the headers tell is checked before anything is decoded: the layout, the classes,
and the memory decoding will take against TRAINHUB_DATASET_MAX_DECODED_BYTES (images x C x H
x W after any resize for an archive, whose first image's header gives C, H and W; the arrays
as stored plus their conversion copies for an .npz). Images are decoded one at a time
straight into the dataset's tensors (core/uploads/image_folder.py, core/uploads/npz.py)."""
from __future__ import annotations

from pathlib import Path

from core.uploads.archives import (
    CORRUPT,
    Limits,
    Source,
    UploadRejected,
    detect_kind,
    open_entries,
)
from core.uploads.decoded import Materialized, Progress, UploadOptions  # noqa: F401 (callers')
from core.uploads.image_folder import decode_folder, plan_folder
from core.uploads.npz import from_npz, plan_npz


def materialize(path: Path, options: UploadOptions, limits: Limits,
                progress: Progress = lambda done, total: None) -> Materialized:
    """The upload decoded; every check its headers allow (the memory budget included) runs
    before any image or array is decoded."""
    kind = detect_kind(path)
    if kind == "npz":
        return from_npz(path, limits)
    with open_entries(path, kind, limits) as entries:
        return decode_folder(plan_folder(entries, options, limits), options, limits,
                              progress)


def check_headers(source: Source, options: UploadOptions, limits: Limits) -> str:
    """What an upload's headers tell without decoding it, for the API to refuse it at once:
    its kind, and for a .zip or .npz (whose directory is at hand) its entries, layout,
    classes and memory budget. A tar's entries are left to the worker: walking a .tar.gz
    means decompressing all of it. Returns the kind; UploadRejected says what is wrong."""
    try:
        kind = detect_kind(source)
        if kind == "npz":
            plan_npz(source, limits)
        elif kind == "zip":
            with open_entries(source, kind, limits) as entries:
                plan_folder(entries, options, limits)
    except CORRUPT as exc:
        raise UploadRejected(f"the archive is damaged ({type(exc).__name__}: {exc})") from None
    return kind
