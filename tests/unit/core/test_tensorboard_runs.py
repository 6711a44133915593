"""TensorBoard run folders (core/tensorboard_runs.py): named `<job name>-<8 digits>`, safe
for a folder, found again by the job's id, removed with the job or when it is gone."""
from __future__ import annotations

import pytest

from core.ids import new_id
from core.tensorboard_runs import (ID_FILE, job_id_of, job_runs, prune_runs, remove_job_runs,
                                   run_folder, run_name)


@pytest.mark.parametrize("job_name, expected", [
    ("lenet-digits", "lenet-digits-0123abcd"),
    ("my run / v2", "my_run_v2-0123abcd"),
    ("../../etc", "etc-0123abcd"),
    (".hidden", "hidden-0123abcd"),
    ("réseau ✓", "r_seau-0123abcd"),
    ("", "job-0123abcd"),
    ("x" * 200, "x" * 64 + "-0123abcd"),
])
def test_a_run_is_named_by_the_job_and_its_short_id_safe_for_a_folder(job_name, expected):
    assert run_name(job_name, "0123abcd" + "0" * 24) == expected


def test_the_run_folder_holds_the_id_and_is_found_again(tmp_path):
    job_id = new_id()
    folder = run_folder(tmp_path, job_id, "lenet-digits")
    assert folder == tmp_path / f"lenet-digits-{job_id[:8]}"
    assert (folder / ID_FILE).read_text().strip() == job_id == job_id_of(folder)
    assert run_folder(tmp_path, job_id, "lenet-digits") == folder  # a resumed attempt
    assert job_runs(tmp_path, job_id) == [folder]


def test_a_name_and_short_id_taken_by_another_job_gives_the_whole_id(tmp_path):
    first, second = "0123abcd" + "1" * 24, "0123abcd" + "2" * 24
    taken = run_folder(tmp_path, first, "same")
    other = run_folder(tmp_path, second, "same")
    assert other == tmp_path / f"same-{second}" and taken != other
    assert job_runs(tmp_path, first) == [taken] and job_runs(tmp_path, second) == [other]
    assert run_folder(tmp_path, second, "same") == other


def test_a_folder_named_by_the_bare_id_is_the_jobs_and_is_written_on(tmp_path):
    job_id = new_id()
    (tmp_path / job_id).mkdir()  # written before runs had names
    assert run_folder(tmp_path, job_id, "lenet-digits") == tmp_path / job_id
    assert job_runs(tmp_path, job_id) == [tmp_path / job_id]


def test_removing_a_jobs_runs_leaves_the_others(tmp_path):
    job_id, other = new_id(), new_id()
    mine = run_folder(tmp_path, job_id, "a")
    (mine / "events.out.tfevents.1").write_bytes(b"x")
    kept = run_folder(tmp_path, other, "a")
    assert remove_job_runs(tmp_path, job_id) == [mine]
    assert not mine.exists() and kept.is_dir()
    assert remove_job_runs(tmp_path / "absent", job_id) == []


def test_pruning_removes_runs_whose_job_is_gone_and_nothing_else(tmp_path):
    alive, deleted, legacy_deleted = new_id(), new_id(), new_id()
    kept = run_folder(tmp_path, alive, "a")
    gone = run_folder(tmp_path, deleted, "b")
    (tmp_path / legacy_deleted).mkdir()
    foreign = tmp_path / "my-own-experiment-deadbeef"  # no id file: not trainhub's
    foreign.mkdir()
    asked: list[set[str]] = []

    def existing(ids):
        asked.append(set(ids))
        return {alive} & set(ids)

    assert prune_runs(tmp_path, existing) == sorted([gone, tmp_path / legacy_deleted])
    assert asked == [{alive, deleted, legacy_deleted}]
    assert kept.is_dir() and foreign.is_dir() and not gone.exists()
    assert prune_runs(tmp_path / "absent", existing) == []
