"""What decoding an upload takes and gives: the options, the decoded dataset, and the checks
both kinds of upload (core/uploads/image_folder.py, core/uploads/npz.py) make before decoding."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from core.tensor_datasets import Split
from core.uploads.archives import Limits, UploadRejected

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


def over_budget(need: int, what: str, limits: Limits) -> None:
    if need > limits.max_decoded_bytes:
        raise UploadRejected(f"decoding it would take about {need} bytes of memory ({what}); "
                             f"the limit is {limits.max_decoded_bytes} bytes "
                             "(TRAINHUB_DATASET_MAX_DECODED_BYTES)")


def check_classes(classes: list[str]) -> None:
    if len(classes) < 2:
        raise UploadRejected(f"a dataset needs at least 2 classes; found {len(classes)}"
                             + (f" ({classes[0]})" if classes else ""))


