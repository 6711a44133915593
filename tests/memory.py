"""A process's peak memory as Linux counts it (VmHWM), reset at will: what a request or a
step made the process hold at its worst, measured in the process itself or in a server."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MB = 2**20


def _status(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise KeyError(field)


def resident(pid: int | str = "self") -> int:
    return _status(pid, "VmRSS")


@dataclass
class Peak:
    """Resident bytes before, the highest since (VmHWM) and now: `with Peak(pid) as p:`."""
    pid: int | str = "self"
    before: int = 0
    highest: int = 0
    after: int = 0

    def __enter__(self) -> "Peak":
        # Writing 5 to clear_refs sets the high-water mark back to what is resident now.
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.before = resident(self.pid)
        return self

    def __exit__(self, *_exc) -> None:
        self.highest, self.after = _status(self.pid, "VmHWM"), resident(self.pid)

    @property
    def rise(self) -> int:
        """How far above `before` the process went at its peak."""
        return self.highest - self.before

    def __str__(self) -> str:
        return (f"{self.before / MB:.0f} MB before, {self.highest / MB:.0f} MB at the peak, "
                f"{self.after / MB:.0f} MB after")
