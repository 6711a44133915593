"""A .pt2 file opened as the zip it is, its entries checked from the headers before any is
read, then read one at a time within the budget.

The headers must show one top-level folder, torch.export's own layout and nothing else (no
AOTInductor shared objects, no pickled weights or custom objects, no ExecuTorch payload),
and an unpacked total within budget. Each entry read is bounded by its header and the
budget; the sample inputs (a torch.save pickle) are never read at all.

ProgramZip.copy_without_ignored writes the copy trainhub stores: every entry it reads, byte
for byte, in order, each entry's data 64-byte aligned as torch's own writer leaves it, and
the entries it never reads dropped (`extra/`) or emptied (the sample inputs: torch.export.load
needs the entry, and takes an empty one as "no sample inputs" without unpickling anything).
"""
from __future__ import annotations

import json
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

from core.program_limits import ProgramLimits, ProgramRejected

_CHUNK = 1024 * 1024
_NAME = re.compile(r"[A-Za-z0-9_]+")
_PLAIN = {"archive_format", "archive_version", "byteorder", ".data/version",
          ".data/serialization_id"}
_REFUSED_DIRS = {
    "data/aotinductor/": "AOTInductor compiled code (shared objects)",
    "data/executorch/": "an ExecuTorch payload",
    "data/mtia": "an MTIA payload",
    "xl_model_weights/": "external weights",
}
_SAMPLE_INPUTS = "data/sample_inputs/"
_IGNORED_DIRS = (_SAMPLE_INPUTS, "extra/")
# torch's PyTorchFileWriter aligns each entry's data at 64 bytes (for mmap), padding the
# local header's extra field with an "FB" block; a copy does the same.
_ALIGN, _PAD_ID = 64, 0x4246
PAD_MAX = _ALIGN + 3  # the most a copy's padding adds to an entry


def _relative_names(zf: zipfile.ZipFile, limits: ProgramLimits) -> tuple[str, dict]:
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise ProgramRejected(f"the archive has {len(infos)} entries; the limit is "
                              f"{limits.max_entries}")
    roots, entries, total = set(), {}, 0
    for info in infos:
        name = info.filename
        if info.is_dir():
            continue
        parts = name.split("/")
        if (name.startswith("/") or "\\" in name or len(parts) < 2
                or any(p in ("", ".", "..") for p in parts)):
            raise ProgramRejected(f"the archive holds an entry named {name!r}")
        if info.flag_bits & 0x1:
            raise ProgramRejected(f"the archive's entry {name} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ProgramRejected(f"the archive's entry {name} uses compression method "
                                  f"{info.compress_type}; only stored or deflated")
        relative = "/".join(parts[1:])
        if relative in entries:
            raise ProgramRejected(f"the archive holds {name} twice")
        roots.add(parts[0])
        entries[relative] = info
        total += info.file_size
    if len(roots) > 1:
        raise ProgramRejected("the archive's entries are not in one top-level folder "
                              f"({', '.join(sorted(roots)[:3])}...)")
    if total > limits.max_unpacked_bytes:
        raise ProgramRejected(f"the archive unpacks to {total} bytes; the limit is "
                              f"{limits.max_unpacked_bytes} (TRAINHUB_PROGRAM_MAX_UNPACKED_BYTES)")
    return (roots.pop() if roots else ""), entries


def _model_name(entries: dict) -> str:
    models = [n[len("models/"):-len(".json")] for n in entries
              if n.startswith("models/") and n.endswith(".json")]
    if not models:
        raise ProgramRejected("not a torch.export archive: it holds no models/*.json "
                              "graph (was it written by torch.save rather than "
                              "torch.export.save?)")
    if len(models) > 1:
        raise ProgramRejected(f"the archive holds {len(models)} programs "
                              f"({', '.join(sorted(models))}); save one program per file")
    if not _NAME.fullmatch(models[0]):
        raise ProgramRejected(f"the archive's program is named {models[0]!r}")
    return models[0]


def _check_layout(entries: dict, model: str) -> None:
    known = _PLAIN | {f"models/{model}.json", f"data/weights/{model}_weights_config.json",
                      f"data/constants/{model}_constants_config.json"}
    for name in entries:
        refused = next((why for d, why in _REFUSED_DIRS.items() if name.startswith(d)), None)
        if refused:
            raise ProgramRejected(f"the archive holds {refused} ({name}); only a "
                                  "torch.export program's graph and raw weights are taken")
        if name in known or name.startswith(_IGNORED_DIRS):
            continue
        if name.endswith(".pt") or name.endswith(".pkl"):
            raise ProgramRejected(f"the archive holds a pickle ({name}): weights stored as "
                                  "pickles are refused (save plain tensors)")
        if name.startswith("data/constants/") and (
                name[len("data/constants/"):].startswith(("custom_obj_", "opaque_obj_"))):
            raise ProgramRejected(f"the archive holds a custom object ({name}); only tensors "
                                  "are taken")
        folder, _, leaf = name.rpartition("/")
        if (folder, leaf.split("_")[0]) in (("data/weights", "weight"),
                                             ("data/constants", "tensor")):
            continue
        raise ProgramRejected(f"the archive holds an entry torch.export does not write: "
                              f"{name}")
    for required in (f"data/weights/{model}_weights_config.json",
                     f"data/constants/{model}_constants_config.json", "archive_format"):
        if required not in entries:
            raise ProgramRejected(f"not a torch.export archive: {required} is missing")


class ProgramZip:
    """An open .pt2 whose headers passed; read() streams one entry, within the budget."""

    def __init__(self, path: Path | str, limits: ProgramLimits):
        self.limits, self.read_total = limits, 0
        size = os.path.getsize(path)
        if size > limits.max_file_bytes:
            raise ProgramRejected(f"the file is {size} bytes; the limit is "
                                  f"{limits.max_file_bytes} (TRAINHUB_PROGRAM_MAX_UPLOAD_BYTES)")
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            raise ProgramRejected("not a torch.export archive (.pt2, a zip file): "
                                  f"{exc} (a pickle, or a truncated file?)") from None
        try:
            self.root, self.entries = _relative_names(self.zip, limits)
            self.model = _model_name(self.entries)
            _check_layout(self.entries, self.model)
            if self.read("archive_format", 16) != b"pt2":
                raise ProgramRejected("not a torch.export archive: archive_format is not pt2")
            if self.entries.get("archive_version") and self.read("archive_version", 16) != b"0":
                raise ProgramRejected("the archive's version is not 0 (torch.export.save's)")
            if self.entries.get("byteorder") and self.read("byteorder", 16) != b"little":
                raise ProgramRejected("the archive's tensors are not little-endian")
        except BaseException:
            self.zip.close()
            raise

    def __enter__(self) -> "ProgramZip":
        return self

    def __exit__(self, *exc) -> None:
        self.zip.close()

    def size(self, name: str) -> int:
        return self.entries[name].file_size

    def _info(self, name: str, cap: int) -> zipfile.ZipInfo:
        info = self.entries.get(name)
        if info is None:
            raise ProgramRejected(f"the archive has no entry {name}")
        if info.file_size > cap:
            raise ProgramRejected(f"the archive's entry {name} is {info.file_size} bytes; "
                                  f"the limit is {cap}")
        return info

    def _chunks(self, name: str, info: zipfile.ZipInfo) -> Iterator[bytes]:
        """The entry's bytes, streamed, every byte counted against the archive's unpacked
        budget (headers that lie are caught here)."""
        got = 0
        try:
            with self.zip.open(info) as stream:
                while chunk := stream.read(_CHUNK):
                    got += len(chunk)
                    if got > info.file_size:
                        raise ProgramRejected(f"the archive's entry {name} unpacks to more "
                                              "than its header says")
                    self.read_total += len(chunk)
                    if self.read_total > self.limits.max_unpacked_bytes:
                        raise ProgramRejected(
                            "the archive unpacks to more than its budget of "
                            f"{self.limits.max_unpacked_bytes} bytes")
                    yield chunk
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            raise ProgramRejected(f"the archive is corrupt ({name}: {exc})") from None
        if got != info.file_size:
            raise ProgramRejected(f"the archive is corrupt ({name}: {got} bytes of "
                                  f"{info.file_size})")

    def read(self, name: str, cap: int) -> bytearray:
        """The entry's bytes: its header's size at most cap, streamed as _chunks does."""
        info = self._info(name, cap)
        out, got = bytearray(info.file_size), 0
        for chunk in self._chunks(name, info):
            out[got:got + len(chunk)] = chunk
            got += len(chunk)
        return out

    def copy_without_ignored(self, target: Path | str) -> None:
        """A copy of the archive at target holding every entry this module reads, each
        byte for byte (its name and compression kept), in the same order; `extra/` dropped
        and the sample inputs an empty entry, in their place (at the end if the archive had
        none). Every byte copied counts against the budget as read() counts it."""
        sample_inputs = f"{_SAMPLE_INPUTS}{self.model}.pt"
        emptied, self.read_total = False, 0  # each entry is read once more: a budget anew
        with open(target, "wb") as raw, zipfile.ZipFile(raw, "w") as out:
            for info in self.zip.infolist():
                name = info.filename.split("/", 1)[-1]
                if info.is_dir() or (name.startswith(_IGNORED_DIRS) and name != sample_inputs):
                    continue
                if name == sample_inputs:
                    out.writestr(_aligned(info.filename, raw.tell(), 0, info), b"")
                    emptied = True
                    continue
                with out.open(_aligned(info.filename, raw.tell(), info.file_size, info),
                              "w") as sink:
                    for chunk in self._chunks(name, info):
                        sink.write(chunk)
            if not emptied:
                out.writestr(_aligned(f"{self.root}/{sample_inputs}", raw.tell(), 0), b"")

    def read_json(self, name: str, cap: int):
        try:
            return json.loads(self.read(name, cap))
        except (ValueError, RecursionError) as exc:
            raise ProgramRejected(f"the archive's {name} is not JSON: {exc}") from None


def _aligned(filename: str, offset: int, size: int,
             like: zipfile.ZipInfo | None = None) -> zipfile.ZipInfo:
    """An entry's header to be written at offset, its data starting on a 64-byte boundary
    (stored, unless like, the entry copied, was deflated)."""
    info = zipfile.ZipInfo(filename, like.date_time if like else (1980, 1, 1, 0, 0, 0))
    info.compress_type = like.compress_type if like and size else zipfile.ZIP_STORED
    info.file_size, info.compress_size, info.CRC = size, 0, 0
    header = len(info.FileHeader(size * 1.05 > zipfile.ZIP64_LIMIT))  # as ZipFile decides
    pad = -(offset + header) % _ALIGN
    if pad:
        pad += _ALIGN if pad < 4 else 0
        info.extra = struct.pack("<HH", _PAD_ID, pad - 4) + b"Z" * (pad - 4)
    return info
