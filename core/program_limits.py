"""What a tenant's torch.export program may be (sizes) and the refusal every check raises."""
from __future__ import annotations

from dataclasses import dataclass

from core.errors import FieldError


class ProgramRejected(FieldError):
    """The file cannot become a program model; the message says why. A 422 naming `field`
    (`file`, the train-mode program, or `eval_file`)."""

    def __init__(self, message: str, field: str = "file"):
        super().__init__(field, message)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ProgramLimits:
    # The file as uploaded, and all its entries unpacked (each entry's header counts before
    # any is read; the bytes read count again as they stream).
    max_file_bytes: int = 1024**3
    max_unpacked_bytes: int = 2 * 1024**3
    # The graph and weights configs (JSON) are the entries parsed whole, to Python objects
    # up to ~20 times their size: efficientnet_b7's graph is 3.3 MB, vit_b_16's 1 MB.
    max_graph_bytes: int = 16 * 1024**2
    max_entries: int = 100_000

    @classmethod
    def from_settings(cls, settings) -> "ProgramLimits":
        return cls(max_file_bytes=settings.program_max_upload_bytes,
                   max_unpacked_bytes=settings.program_max_unpacked_bytes)
