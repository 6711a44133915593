"""A job's TensorBoard log (worker/tensorboard.py): one run folder per job that a resumed
attempt writes on (each step once), and a full disk named, never hidden at close."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.files import NoSpaceLeft
from core.ids import new_id
from tests.mounts import fill, tmpfs
from worker.tensorboard import TensorBoardLog


def points(steps):
    return [SimpleNamespace(name="loss", value=float(s), step=s) for s in steps]


def test_a_resumed_attempt_writes_on_in_the_same_run_each_step_once(tmp_path):
    job_id = new_id()
    first = TensorBoardLog.for_job(tmp_path, job_id, "lenet-digits", store=None)
    first.add(points(range(1, 9)))  # the attempt got to step 8; its checkpoint is at 5
    first.close()
    resumed = TensorBoardLog.for_job(tmp_path, job_id, "lenet-digits", purge_step=6,
                                     store=None)
    assert resumed.directory == first.directory == tmp_path / f"lenet-digits-{job_id[:8]}"
    assert resumed.key_prefix == f"jobs/{job_id}/tensorboard"
    resumed.add(points(range(6, 11)))
    resumed.close()
    assert [p.name for p in tmp_path.iterdir()] == [f"lenet-digits-{job_id[:8]}"]
    acc = EventAccumulator(str(resumed.directory))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == list(range(1, 11))


# The event writer's own thread dies of the ENOSPC (what the test makes happen).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_full_disk_fails_a_write_naming_the_run_and_close_only_warns(tmp_path, caplog):
    with tmpfs(tmp_path / "tb", 64 * 1024) as root:
        board = TensorBoardLog.for_job(root, new_id(), "full", store=None)
        board.add(points([1]))
        board.flush()
        fill(root)
        with pytest.raises(NoSpaceLeft) as caught:
            for step in range(2, 2000):  # the writer's thread fails; a later call says so
                board.add(points([step]))
                board.flush()
        assert str(caught.value) == f"no space left on device: {board.directory}"
        with caplog.at_level(logging.WARNING):
            board.close()
        assert f"could not close the TensorBoard files in {board.directory}" in caplog.text
