"""core.export_cache on a local artifact store (the exporters stood in for): an export is
made once per checkpoint hash and format, under the job's prefix; a file without its note
(an export cut short) is made again; a load or export failure stores nothing."""
from __future__ import annotations

import hashlib
import threading

import pytest

import core.export
from core.artifacts import LocalArtifactStore, job_prefix
from core.export import ExportError
from core.export_cache import export_key, find_export, note_key, stored_export

JOB, SHA = "a" * 32, "b" * 64


@pytest.fixture
def made(monkeypatch) -> list[str]:
    """Formats exported, in order; each 'export' writes the format's name and the call's
    number."""
    calls: list[str] = []

    def fake(fmt):
        def export(classifier, path):
            calls.append(fmt)
            path.write_bytes(f"{fmt} {len(calls)}".encode())
        return export

    for fmt in core.export.FORMATS:
        monkeypatch.setitem(core.export.EXPORTERS, fmt, fake(fmt))
    return calls


def test_made_once_per_checkpoint_and_format_under_the_jobs_prefix(tmp_path, made):
    store = LocalArtifactStore(tmp_path)
    loads = []

    def load():
        loads.append(1)
        return object()

    first = stored_export(store, JOB, SHA, "pt2", load)
    assert first.key == f"{job_prefix(JOB)}/exports/{SHA}.pt2" == export_key(JOB, SHA, "pt2")
    assert first.size == len(b"pt2 1") and first.sha256 == hashlib.sha256(b"pt2 1").hexdigest()
    assert stored_export(store, JOB, SHA, "pt2", load) == first
    assert stored_export(store, JOB, SHA, "onnx", load).key.endswith(".onnx")
    assert stored_export(store, JOB, "c" * 64, "pt2", load).key != first.key
    assert made == ["pt2", "onnx", "pt2"] and len(loads) == 3
    store.delete_prefix(job_prefix(JOB))  # what deleting the job does
    assert find_export(store, first.key) is None


def test_a_file_without_its_note_is_made_again(tmp_path, made):
    store = LocalArtifactStore(tmp_path)
    key = export_key(JOB, SHA, "onnx")
    store.save(key, lambda out: out.write(b"half an export"))
    assert find_export(store, key) is None
    again = stored_export(store, JOB, SHA, "onnx", object)
    assert made == ["onnx"] and store.path(key).read_bytes() == b"onnx 1"
    assert find_export(store, key) == again and store.exists(note_key(key))


def test_concurrent_requests_make_one_export(tmp_path, made):
    store = LocalArtifactStore(tmp_path)
    barrier = threading.Barrier(4)
    results = []

    def request():
        barrier.wait()
        results.append(stored_export(store, JOB, SHA, "pt2", object))

    threads = [threading.Thread(target=request) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert made == ["pt2"] and len(set(results)) == 1 and len(results) == 4


def test_a_failed_export_or_load_stores_nothing(tmp_path, monkeypatch):
    store = LocalArtifactStore(tmp_path)

    def refuses(classifier, path):
        path.write_bytes(b"partial")
        raise ExportError("the network cannot be exported as pt2: ...")

    monkeypatch.setitem(core.export.EXPORTERS, "pt2", refuses)
    with pytest.raises(ExportError):
        stored_export(store, JOB, SHA, "pt2", object)

    def broken_checkpoint():
        raise OSError("gone")

    with pytest.raises(OSError):
        stored_export(store, JOB, SHA, "onnx", broken_checkpoint)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
