"""atomic_write with writers that share a folder and a pid: processes in two containers on
one volume (compose's worker replicas) have the same pids."""
from __future__ import annotations

import threading

from core.files import atomic_write


def test_two_writers_with_the_same_pid_never_take_each_others_temporary_file(tmp_path):
    target = tmp_path / "cache" / "digits.pt"
    both_writing = threading.Barrier(2)
    errors: list[BaseException] = []

    def write(payload: bytes) -> None:
        def body(f) -> None:
            f.write(payload[:10])
            both_writing.wait(timeout=10)  # both temporary files exist, same pid
            f.write(payload[10:])

        try:
            atomic_write(target, body)
        except BaseException as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(exc)

    payloads = [bytes([1]) * 1000, bytes([2]) * 1000]
    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert errors == []
    assert target.read_bytes() in payloads  # one whole file, never a mix
    assert [p.name for p in target.parent.iterdir()] == ["digits.pt"]  # no temporary left


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write(target, lambda f: f.write(b"old"))

    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    try:
        atomic_write(target, fail)
    except RuntimeError:
        pass
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
