"""Reading uploaded archives safely (core/uploads/archives.py, through core.uploads.materialize).

Format detection by content, entry-name checks, links and devices, zip-slip and tar traversal,
entry-count and unpacked-size caps (zip and tar bombs), and that nothing is ever extracted.
Every archive is built in tmp_path with tarfile / zipfile; nothing here needs a database.
"""
from __future__ import annotations

import io
import os
import struct
import tarfile
import tempfile
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import core.uploads.archives as archives
from core.uploads.archives import (
    Limits,
    UploadRejected,
    check_name,
    detect_kind,
    open_entries,
)
from core.uploads.materialize import UploadOptions, materialize
from tests.unit import factories

LIMITS = Limits(max_entries=1000, max_unpacked_bytes=64 * 2**20, max_image_pixels=1_000_000)
MB = 2**20


# ---- helpers ---------------------------------------------------------------------------------

def png(value: int = 0, size: tuple[int, int] = (4, 4)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(buf, "PNG")
    return buf.getvalue()


def image_folder(n_per_class: int = 2) -> dict[str, bytes]:
    """A valid split-layout dataset: train/{cat,dog}/*, test/{cat,dog}/*."""
    return {f"{split}/{cls}/{i}.png": png(10 * i + (cls == "dog"))
            for split in ("train", "test") for cls in ("cat", "dog") for i in range(n_per_class)}


def write_zip(path: Path, files: dict[str, bytes],
              compression: int = zipfile.ZIP_STORED) -> Path:
    return factories.write_zip(path, files, compression)


def write_tar(path: Path, files: dict[str, bytes], mode: str = "w") -> Path:
    return factories.write_tar(path, files, mode)


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


class Zeros(io.RawIOBase):
    """n zero bytes, produced on demand (building a bomb without holding it)."""

    def __init__(self, n: int):
        self.left = n

    def read(self, size: int = -1) -> bytes:
        size = self.left if size is None or size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


def rejected(path: Path, limits: Limits = LIMITS, options: UploadOptions | None = None) -> str:
    with pytest.raises(UploadRejected) as info:
        materialize(path, options or UploadOptions(), limits)
    return str(info.value)


def _evil_names(directory: Path) -> set[str]:
    try:
        return {n for n in os.listdir(directory) if "evil" in n}
    except OSError:
        return set()


@pytest.fixture
def nothing_extracted(tmp_path, monkeypatch):
    """Fails the test if materialize writes files: nothing new beside the archives in tmp_path,
    and no 'evil' file in the places a traversal would land (cwd, /tmp, tmp_path's parents)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    places = {Path.cwd(), Path.cwd().parent, Path("/tmp"), Path(tempfile.gettempdir()),
              tmp_path, tmp_path.parent, tmp_path.parent.parent, Path("/")}
    before = {p: _evil_names(p) for p in places}
    tree_before: set[Path] = set()

    def snapshot() -> set[Path]:
        return set(tmp_path.rglob("*"))

    def start() -> None:
        tree_before.update(snapshot())

    yield start
    assert {p: _evil_names(p) for p in places} == before
    assert snapshot() == tree_before, "materialize wrote files"


# ---- detect_kind -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode, suffix", [
    ("w", ".tar"), ("w:gz", ".tar.gz"), ("w:bz2", ".tar.bz2"), ("w:xz", ".tar.xz")])
def test_detect_kind_tar_in_any_compression(tmp_path, mode, suffix):
    path = write_tar(tmp_path / f"data{suffix}", image_folder(), mode)
    assert detect_kind(path) == "tar"


def test_detect_kind_zip_and_npz(tmp_path):
    assert detect_kind(write_zip(tmp_path / "a.zip", image_folder())) == "zip"
    npz = tmp_path / "a.npz"
    np.savez(npz, x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.array([0, 1]))
    assert detect_kind(npz) == "npz"
    compressed = tmp_path / "b.npz"
    np.savez_compressed(compressed, x_train=np.zeros((2, 4, 4), np.uint8))
    assert detect_kind(compressed) == "npz"


@pytest.mark.parametrize("content", [b"", b"hello world\n" * 100, bytes(range(256)) * 10,
                                     b"\x1f\x8b\x08\x00garbage-after-gzip-magic", b"PK\x03\x04junk"])
def test_garbage_is_rejected_naming_the_accepted_formats(tmp_path, content):
    path = tmp_path / "upload.zip"
    path.write_bytes(content)
    with pytest.raises(UploadRejected) as info:
        detect_kind(path)
    for fmt in (".tar", ".tar.gz", ".zip", ".npz"):
        assert fmt in str(info.value)
    assert rejected(path) == str(info.value)


def test_content_wins_over_the_name(tmp_path):
    fake_zip = write_tar(tmp_path / "data.zip", image_folder(), "w:gz")
    assert detect_kind(fake_zip) == "tar"
    result = materialize(fake_zip, UploadOptions(), LIMITS)
    assert result.layout == "split" and result.classes == ["cat", "dog"]
    fake_tar = write_zip(tmp_path / "data.tar.gz", image_folder())
    assert detect_kind(fake_tar) == "zip"
    assert materialize(fake_tar, UploadOptions(), LIMITS).classes == ["cat", "dog"]


def test_a_tar_whose_last_member_is_a_zip_is_a_tar(tmp_path):
    inner = write_zip(tmp_path / "extra.zip", {"notes.txt": b"hello"})
    files = image_folder()
    files["extra.zip"] = inner.read_bytes()
    path = write_tar(tmp_path / "data.tar", files)
    assert detect_kind(path) == "tar"


# ---- check_name ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "/etc/passwd", "\\windows\\x", "C:/x", "c:x", "..\\x", "a\\b.png", "a/../../b", "../x",
    "..", "a/..", "train/cat/../../../x.png"])
def test_check_name_rejects_absolute_and_escaping_paths(name):
    with pytest.raises(UploadRejected) as info:
        check_name(name)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("name, normalised", [
    ("a/./b", "a/b"), ("./a/b", "a/b"), ("a//b", "a/b"), ("a/b/", "a/b"),
    ("train/cat/x.png", "train/cat/x.png"), ("a..b/c", "a..b/c"), ("...", "..."),
    ("./", ""), ("", "")])
def test_check_name_normalises_safe_paths(name, normalised):
    assert check_name(name) == normalised


# ---- tar: links, devices, traversal -----------------------------------------------------------

@pytest.mark.parametrize("kind, word", [
    (tarfile.SYMTYPE, "link"), (tarfile.LNKTYPE, "link"), (tarfile.CHRTYPE, "device"),
    (tarfile.BLKTYPE, "device"), (tarfile.FIFOTYPE, "FIFO")])
@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_tar_links_and_devices_are_rejected(tmp_path, nothing_extracted, kind, word, mode):
    path = tmp_path / "data.tar"
    with tarfile.open(path, mode) as tf:
        for name, data in image_folder().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        special = tarfile.TarInfo("train/cat/x.png")
        special.type = kind
        special.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
        special.devmajor, special.devminor = 1, 3
        tf.addfile(special)
    nothing_extracted()
    message = rejected(path)
    assert "'train/cat/x.png'" in message and word in message


@pytest.mark.parametrize("evil", ["../evil.png", "../../evil.png", "/tmp/evil.png",
                                  "train/cat/../../../evil.png"])
def test_tar_traversal_is_rejected(tmp_path, nothing_extracted, evil):
    files = image_folder()
    files[evil] = png()
    path = write_tar(tmp_path / "data.tar.gz", files, "w:gz")
    nothing_extracted()
    assert repr(evil) in rejected(path)


# ---- zip: slip, absolute names, symlinks -------------------------------------------------------

@pytest.mark.parametrize("evil", ["../../evil.png", "../evil.png", "/tmp/evil.png", "/evil.png",
                                  "C:/evil.png", "train/cat/../../../evil.png"])
def test_zip_slip_and_absolute_names_are_rejected(tmp_path, nothing_extracted, evil):
    files = image_folder()
    files[evil] = png()
    path = write_zip(tmp_path / "data.zip", files)
    assert evil in zipfile.ZipFile(path).namelist()  # the name really is stored as is
    nothing_extracted()
    message = rejected(path)
    assert repr(evil) in message


def test_zip_symlink_entry_is_rejected(tmp_path, nothing_extracted):
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in image_folder().items():
            zf.writestr(name, data)
        link = zipfile.ZipInfo("train/cat/x.png")
        link.create_system = 3  # unix
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    nothing_extracted()
    message = rejected(path)
    assert "'train/cat/x.png'" in message and "link" in message


def test_a_valid_zip_is_read_without_extracting_anything(tmp_path, nothing_extracted):
    path = write_zip(tmp_path / "data.zip", image_folder(), zipfile.ZIP_DEFLATED)
    nothing_extracted()
    result = materialize(path, UploadOptions(), LIMITS)
    assert (len(result.train), len(result.test)) == (4, 4)


# ---- caps: entries and unpacked bytes -----------------------------------------------------------

@pytest.fixture
def no_reads(monkeypatch):
    """Once armed (after the archive is built), any attempt to read entry data or to decode an
    image fails the test."""
    def boom(*args, **kwargs):
        raise AssertionError("an entry was read")

    def arm() -> None:
        monkeypatch.setattr(tarfile.TarFile, "extractfile", boom)
        monkeypatch.setattr(zipfile.ZipFile, "open", boom)
        monkeypatch.setattr("core.image_decode.Image.open", boom)
    return arm


@pytest.mark.parametrize("fmt", ["zip", "tar", "tar.gz"])
def test_too_many_entries_are_rejected_before_any_is_read(tmp_path, no_reads, fmt):
    files = {f"cat/{i}.png": b"not an image" for i in range(6)}
    files.update({f"dog/{i}.png": b"not an image" for i in range(5)})  # 11 entries
    assert len(files) == 11
    path = (write_zip(tmp_path / "d.zip", files) if fmt == "zip"
            else write_tar(tmp_path / f"d.{fmt}", files, "w:gz" if fmt == "tar.gz" else "w"))
    limits = Limits(max_entries=10, max_unpacked_bytes=10 * MB, max_image_pixels=10**6)
    no_reads()
    message = rejected(path, limits)
    assert "more than 10 entries" in message and "decodable" not in message


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_exactly_the_entry_cap_is_allowed(tmp_path, fmt):
    files = {f"{c}/{i}.png": png(i) for c in ("cat", "dog") for i in range(5)}  # 10 entries
    path = (write_zip(tmp_path / "d.zip", files) if fmt == "zip"
            else write_tar(tmp_path / "d.tar", files))
    limits = Limits(max_entries=10, max_unpacked_bytes=10 * MB, max_image_pixels=10**6)
    result = materialize(path, UploadOptions(test_fraction=0.2), limits)
    assert len(result.train) + len(result.test) == 10


def test_directory_entries_count_towards_the_entry_cap(tmp_path, no_reads):
    path = tmp_path / "d.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(11):
            zf.writestr(f"dir{i}/", b"")
    limits = Limits(max_entries=10, max_unpacked_bytes=10 * MB, max_image_pixels=10**6)
    no_reads()
    assert "more than 10 entries" in rejected(path, limits)


@pytest.mark.parametrize("fmt", ["zip", "tar", "tar.gz"])
def test_declared_unpacked_bytes_over_the_cap_are_rejected(tmp_path, no_reads, fmt):
    files = {f"{c}/{i}.png": bytes(400) for c in ("cat", "dog") for i in range(2)}  # 1600 B
    path = (write_zip(tmp_path / "d.zip", files) if fmt == "zip"
            else write_tar(tmp_path / f"d.{fmt}", files, "w:gz" if fmt == "tar.gz" else "w"))
    limits = Limits(max_entries=100, max_unpacked_bytes=1000, max_image_pixels=10**6)
    no_reads()
    message = rejected(path, limits)
    assert "more than 1000 bytes" in message and "unpacks" in message


def rejected_with_peak_memory(path: Path, limits: Limits) -> tuple[str, int]:
    """The rejection message and the peak Python memory traced while rejecting."""
    tracemalloc.start()
    try:
        message = rejected(path, limits)
        return message, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_zip_bomb_is_rejected_from_its_header_in_bounded_memory(tmp_path, nothing_extracted):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train/cat/a.png", png())
        with zf.open("train/cat/zeros.png", "w") as f:
            for _ in range(50):
                f.write(bytes(MB))
    assert path.stat().st_size < 1 * MB  # 50 MB of zeros deflate to ~50 KB
    limits = Limits(max_entries=100, max_unpacked_bytes=1 * MB, max_image_pixels=10**6)
    nothing_extracted()
    message, peak = rejected_with_peak_memory(path, limits)
    assert "more than 1048576 bytes" in message
    assert peak < 2 * MB, peak  # the 50 MB entry is never inflated


def _under_declared_zip(path: Path, real_size: int, declared: int, fix_crc: bool,
                        before: dict[str, bytes] | None = None) -> Path:
    """A zip with one deflated entry of real_size zeros whose headers claim `declared` bytes
    (after the entries of `before`)."""
    name = "train/cat/a.png"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for other, data in (before or {}).items():
            zf.writestr(other, data)
        with zf.open(name, "w") as f:
            for start in range(0, real_size, MB):
                f.write(bytes(min(MB, real_size - start)))
        local = zf.getinfo(name).header_offset
    raw = bytearray(path.read_bytes())
    assert raw[local:local + 4] == b"PK\x03\x04"
    central = raw.rfind(name.encode()) - 46  # its central directory record, name last
    assert raw[central:central + 4] == b"PK\x01\x02"
    struct.pack_into("<I", raw, local + 22, declared)  # local header: uncompressed size
    struct.pack_into("<I", raw, central + 24, declared)  # central directory: uncompressed size
    if fix_crc:  # the CRC of what a reader stopping at `declared` bytes sees
        crc = zlib.crc32(bytes(declared)) & 0xFFFFFFFF
        struct.pack_into("<I", raw, local + 14, crc)
        struct.pack_into("<I", raw, central + 16, crc)
    path.write_bytes(bytes(raw))
    return path


def test_an_under_declared_zip_entry_is_never_read_past_its_declared_size(tmp_path):
    path = _under_declared_zip(tmp_path / "liar.zip", 20 * MB, 100, fix_crc=True)
    assert zipfile.ZipFile(path).getinfo("train/cat/a.png").file_size == 100
    tracemalloc.start()
    try:
        with open_entries(path, "zip", LIMITS) as entries:
            (entry,) = entries
            assert entry.size == 100
            data = entry.read()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(data) <= 100
    assert peak < 2 * MB, peak


def test_an_under_declared_zip_entry_fails_in_bounded_memory(tmp_path):
    path = _under_declared_zip(tmp_path / "liar.zip", 20 * MB, 100, fix_crc=False)
    tracemalloc.start()
    try:
        with pytest.raises((UploadRejected, zipfile.BadZipFile)):
            materialize(path, UploadOptions(), LIMITS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * MB, peak


def test_an_under_declared_zip_entry_is_an_upload_rejected(tmp_path):
    # Valid images first (the plan reads the first one's header), so that the liar is
    # reached when the images are decoded.
    path = _under_declared_zip(tmp_path / "liar.zip", 20 * MB, 100, fix_crc=False,
                               before=image_folder())
    message = rejected(path)
    assert "train/cat/a.png" in message and "corrupt" in message


def test_a_truncated_tar_gz_is_an_upload_rejected(tmp_path):
    files = {f"{c}/{i}.png": np.random.default_rng(i).bytes(3000)
             for c in ("cat", "dog") for i in range(3)}
    path = write_tar(tmp_path / "d.tar.gz", files, "w:gz")
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
    rejected(path)


def test_tar_gz_bomb_is_rejected_without_reading_it(tmp_path, nothing_extracted, no_reads):
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tf:
        info = tarfile.TarInfo("train/cat/zeros.png")
        info.size = 50 * MB
        tf.addfile(info, Zeros(info.size))
    assert path.stat().st_size < 1 * MB
    limits = Limits(max_entries=100, max_unpacked_bytes=1 * MB, max_image_pixels=10**6)
    nothing_extracted()
    no_reads()
    message, peak = rejected_with_peak_memory(path, limits)
    assert "more than 1048576 bytes" in message
    assert peak < 2 * MB, peak  # the 50 MB entry is never inflated


def test_tar_caps_trip_at_the_first_header_over_the_limit(tmp_path, monkeypatch):
    """Headers are checked one at a time: the cap trips at the first member over it, before
    that member's name (or any later member) is even looked at."""
    files = {f"cat/{i}.png": png(i) for i in range(5)}
    path = write_tar(tmp_path / "d.tar", files)
    seen = []
    real = archives.check_name

    def spy(name):
        seen.append(name)
        return real(name)

    monkeypatch.setattr(archives, "check_name", spy)
    limits = Limits(max_entries=2, max_unpacked_bytes=10 * MB, max_image_pixels=10**6)
    with pytest.raises(UploadRejected, match="more than 2 entries"):
        with open_entries(path, "tar", limits):
            pass
    assert seen == ["cat/0.png", "cat/1.png"]


def test_open_entries_lists_regular_files_only(tmp_path):
    path = tmp_path / "d.tar"
    with tarfile.open(path, "w") as tf:
        for d in ("train", "train/cat"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
        data = png(7)
        info = tarfile.TarInfo("./train/cat//a.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with open_entries(path, "tar", LIMITS) as entries:
        assert [(e.path, e.size) for e in entries] == [("train/cat/a.png", len(data))]
        assert entries[0].read() == data
