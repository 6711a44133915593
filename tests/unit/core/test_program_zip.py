"""core.program_zip's copy, the file trainhub stores for an upload: every entry it reads byte
for byte, in order, 64-byte aligned as torch writes them; `extra/` dropped; the sample
inputs an empty entry, which torch.export.load itself reads as "none" (in a fresh Python)."""
from __future__ import annotations

import struct
import subprocess
import sys
import tracemalloc
import zipfile

import pytest
import torch

from core.program_archive import load_checked
from core.program_limits import ProgramLimits, ProgramRejected
from core.program_zip import ProgramZip
from tests import programs
from tests.programs import images, residual_pair, rewrite
from tests.unit.core.test_program_archive import _declare_size

SAMPLE_INPUTS = "data/sample_inputs/model.pt"


def copy(source, target, limits=ProgramLimits()):
    with ProgramZip(source, limits) as archive:
        archive.copy_without_ignored(target)
    return target


def relative(info: zipfile.ZipInfo) -> str:
    return info.filename.split("/", 1)[1]


def data_offset(raw: bytes, info: zipfile.ZipInfo) -> int:
    name_length, extra_length = struct.unpack_from("<HH", raw, info.header_offset + 26)
    return info.header_offset + 30 + name_length + extra_length


@pytest.fixture
def program(tmp_path):
    """The eval-mode program: its outputs do not depend on a random draw."""
    return residual_pair(tmp_path)[1]


def test_the_copy_keeps_every_entry_read_byte_for_byte_and_drops_the_rest(program, tmp_path):
    marker = tmp_path / "ran"
    source = rewrite(program, tmp_path / "with-extra.pt2",
                     replace={SAMPLE_INPUTS: programs.marker_pickle(marker)},
                     add={"extra/notes.txt": b"hello"})
    target = copy(source, tmp_path / "stored.pt2")
    with zipfile.ZipFile(source) as before, zipfile.ZipFile(target) as after:
        kept = [i for i in before.infolist() if not relative(i).startswith("extra/")]
        assert [i.filename for i in after.infolist()] == [i.filename for i in kept]
        for old, new in zip(kept, after.infolist()):
            assert new.compress_type == old.compress_type == zipfile.ZIP_STORED
            if relative(old) == SAMPLE_INPUTS:
                assert new.file_size == 0 and after.read(new) == b""
            else:
                assert after.read(new) == before.read(old), old.filename
    raw = target.read_bytes()
    with zipfile.ZipFile(target) as after:
        assert after.testzip() is None
        assert all(data_offset(raw, i) % 64 == 0 for i in after.infolist())
    assert not marker.exists()


def test_an_archive_without_sample_inputs_gets_an_empty_one_and_keeps_deflate(program,
                                                                             tmp_path):
    source = tmp_path / "deflated.pt2"
    with zipfile.ZipFile(program) as zin, zipfile.ZipFile(source, "w") as zout:
        for info in zin.infolist():
            if relative(info) != SAMPLE_INPUTS:
                zout.writestr(info.filename, zin.read(info), zipfile.ZIP_DEFLATED)
    target = copy(source, tmp_path / "stored.pt2")
    with zipfile.ZipFile(target) as after:
        infos = after.infolist()
        assert relative(infos[-1]) == SAMPLE_INPUTS and infos[-1].file_size == 0
        assert {i.compress_type for i in infos[:-1]} == {zipfile.ZIP_DEFLATED}
    x = images(3)
    assert torch.equal(load_checked(target).module()(x), load_checked(program).module()(x))


def test_an_entry_whose_header_lies_is_refused_while_copying(program, tmp_path):
    """Its headers pass (and check_archive reads no weight), the copy streams the weight and
    finds it corrupt, within a few MiB."""
    with zipfile.ZipFile(program) as zf:
        declared = next(i.file_size for i in zf.infolist() if i.filename.endswith("weight_0"))
    liar = rewrite(program, tmp_path / "liar.pt2",
                   replace={"data/weights/weight_0": bytes(16 * 2**20)})
    _declare_size(liar, "weight_0", declared)
    tracemalloc.start()
    try:
        with pytest.raises(ProgramRejected, match="corrupt.*weight_0"):
            copy(liar, tmp_path / "stored.pt2")
        assert tracemalloc.get_traced_memory()[1] < 4 * 2**20
    finally:
        tracemalloc.stop()


def test_torch_export_load_reads_the_copy_in_a_fresh_python(program, tmp_path):
    """Plain torch.export.load, as an operator or the tenant would run it on a stored file:
    it loads, with no sample inputs, and computes what trainhub's loader computes."""
    target = copy(program, tmp_path / "stored.pt2")
    x = images(3)
    torch.save(x, tmp_path / "x.pt")
    script = (
        "import sys, torch\n"
        "program = torch.export.load(sys.argv[1])\n"
        "assert program.example_inputs is None, program.example_inputs\n"
        "x = torch.load(sys.argv[2])\n"
        "torch.save(program.module()(x), sys.argv[3])\n")
    subprocess.run([sys.executable, "-c", script, str(target), str(tmp_path / "x.pt"),
                    str(tmp_path / "y.pt")], check=True, timeout=300)
    assert torch.equal(torch.load(tmp_path / "y.pt"), load_checked(target).module()(x))
