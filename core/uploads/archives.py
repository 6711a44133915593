"""Reading uploaded archives safely: every entry is checked before any is read.

Refused: absolute paths, `..`, links, devices, more entries or more unpacked bytes than
the caps allow (zip and tar bombs). Nothing is ever extracted to disk: entries are read
into memory one at a time, each bounded by the size its header declares. The upload is a
path (the worker) or an open binary file (the API's spooled upload, checked before it is
stored).
"""
from __future__ import annotations

import posixpath
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator


class UploadRejected(Exception):
    """The upload cannot become a dataset; the message names the problem."""


Source = Path | BinaryIO


@dataclass(frozen=True)
class Limits:
    max_entries: int
    max_unpacked_bytes: int
    max_image_pixels: int
    # The memory decoding may take (core.uploads.materialize's estimate, checked before any
    # of it is spent); TRAINHUB_DATASET_MAX_DECODED_BYTES's default.
    max_decoded_bytes: int = 512 * 2**20


@dataclass
class Entry:
    path: str  # normalised, relative, '/'-separated
    size: int
    read: Callable[[], bytes]
    open: Callable[[], BinaryIO]  # a stream of the entry: a header is read without the rest


def _rewound(source: Source) -> Source:
    if not isinstance(source, Path):
        source.seek(0)
    return source


def open_zip(source: Source) -> zipfile.ZipFile:
    return zipfile.ZipFile(_rewound(source))


def open_tar(source: Source) -> tarfile.TarFile:
    if isinstance(source, Path):
        return tarfile.open(source, "r:*")
    return tarfile.open(fileobj=_rewound(source), mode="r:*")


def detect_kind(source: Source) -> str:
    """'zip', 'tar' or 'npz', from the file's content (names can lie)."""
    if isinstance(source, Path):
        with open(source, "rb") as f:
            magic = f.read(2)
    else:
        magic = _rewound(source).read(2)
    # is_zipfile alone also accepts a tar whose last member is a zip.
    if magic == b"PK" and zipfile.is_zipfile(_rewound(source)):
        with open_zip(source) as zf:
            names = zf.namelist()
        return "npz" if names and all(n.endswith(".npy") for n in names) else "zip"
    try:
        with open_tar(source):
            return "tar"
    except (tarfile.TarError, EOFError, zlib.error, OSError):
        pass
    raise UploadRejected("the upload is not a .tar, .tar.gz, .zip or .npz file")


def check_name(name: str) -> str:
    """A safe relative path, or UploadRejected naming the entry."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UploadRejected(f"archive entry {name!r} has an absolute path")
    if "\\" in name:
        raise UploadRejected(f"archive entry {name!r} uses backslashes")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UploadRejected(f"archive entry {name!r} points outside the archive ('..')")
    return posixpath.join(*parts) if parts else ""


def _check_totals(count: int, total: int, limits: Limits) -> None:
    if count > limits.max_entries:
        raise UploadRejected(f"the archive has more than {limits.max_entries} entries "
                             "(TRAINHUB_DATASET_MAX_ENTRIES)")
    if total > limits.max_unpacked_bytes:
        raise UploadRejected(f"the archive unpacks to more than {limits.max_unpacked_bytes} "
                             "bytes (TRAINHUB_DATASET_MAX_UNPACKED_BYTES)")


CORRUPT = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError)


@contextmanager
def open_entries(source: Source, kind: str, limits: Limits) -> Iterator[list[Entry]]:
    """The archive's regular files, after every entry passed the checks."""
    try:
        if kind in ("zip", "npz"):
            with open_zip(source) as zf:
                yield _zip_entries(zf, limits)
        else:
            with open_tar(source) as tf:
                yield _tar_entries(tf, limits)
    except CORRUPT as exc:
        raise UploadRejected(f"the archive is damaged ({type(exc).__name__}: {exc})") from None


def _zip_entries(zf: zipfile.ZipFile, limits: Limits) -> list[Entry]:
    infos = zf.infolist()
    _check_totals(len(infos), sum(i.file_size for i in infos), limits)
    entries = []
    for info in infos:
        name = check_name(info.filename)
        mode = info.external_attr >> 16
        if (mode & 0o170000) == 0o120000:
            raise UploadRejected(f"archive entry {info.filename!r} is a symbolic link")
        if info.is_dir() or not name:
            continue
        entries.append(Entry(name, info.file_size, _zip_reader(zf, info),
                             lambda info=info: zf.open(info)))
    return entries


def _zip_reader(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            # zipfile stops at the declared size and checks the CRC: a lying header is
            # caught here, after at most file_size bytes.
            with zf.open(info) as f:
                return f.read(info.file_size)
        except CORRUPT as exc:
            raise UploadRejected(f"archive entry {info.filename!r} is corrupt "
                                 f"({type(exc).__name__}: {exc})") from None
    return read


def _tar_stream(tf: tarfile.TarFile, member: tarfile.TarInfo) -> BinaryIO:
    f = tf.extractfile(member)
    if f is None:
        raise UploadRejected(f"archive entry {member.name!r} is not a regular file")
    return f


def _tar_entries(tf: tarfile.TarFile, limits: Limits) -> list[Entry]:
    entries, count, total = [], 0, 0
    for member in tf:  # headers only; data is read later, one entry at a time
        count += 1
        total += max(member.size, 0)
        _check_totals(count, total, limits)
        name = check_name(member.name)
        if member.issym() or member.islnk():
            raise UploadRejected(f"archive entry {member.name!r} is a link")
        if member.isdev():
            raise UploadRejected(f"archive entry {member.name!r} is a device or FIFO")
        if member.isdir() or not name:
            continue
        if not member.isfile():
            raise UploadRejected(f"archive entry {member.name!r} is not a regular file")
        entries.append(Entry(name, member.size, _tar_reader(tf, member),
                             lambda member=member: _tar_stream(tf, member)))
    return entries


def _tar_reader(tf: tarfile.TarFile, member: tarfile.TarInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            f = tf.extractfile(member)
            data = f.read(member.size) if f is not None else None
        except CORRUPT as exc:
            raise UploadRejected(f"archive entry {member.name!r} is corrupt "
                                 f"({type(exc).__name__}: {exc})") from None
        if data is None or len(data) != member.size:
            raise UploadRejected(f"archive entry {member.name!r} is truncated")
        return data
    return read
