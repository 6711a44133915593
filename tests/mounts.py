"""Real small and read-only file systems for tests of a full or unwritable data folder: a
tmpfs mounted over a folder. Mounting needs root (CAP_SYS_ADMIN); elsewhere the test is
skipped, saying so."""
from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(f"mount {' '.join(args)}: {done.stderr.strip()}")


@contextmanager
def tmpfs(folder: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of size_bytes (whole pages) at folder for the block, then unmounted (what was
    written there goes with it)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _mount("-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder))
    except (OSError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {exc}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def make_read_only(folder: Path) -> None:
    """Remount a tmpfs from tmpfs() read-only: writes then fail with EROFS, even as root
    (which chmod cannot do)."""
    _mount("-o", "remount,ro", str(folder))


def fill(folder: Path) -> None:
    """Write until the file system at folder is full (ENOSPC)."""
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
