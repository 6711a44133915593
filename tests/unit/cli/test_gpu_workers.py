"""One worker per GPU by default, pinned with CUDA_VISIBLE_DEVICES; or one worker holding
several. No GPU exists on CI machines: the GPU count is the only thing faked here."""
from __future__ import annotations

import pytest

from cli import server
from cli.gpu_workers import GpuChoiceError, WorkerPlacement, placements


def test_each_gpu_gets_its_own_pinned_worker():
    assert placements("each", 2, "trainhub@box", environ={}) == [
        WorkerPlacement("trainhub-gpu0@box", "0", 1),
        WorkerPlacement("trainhub-gpu1@box", "1", 1)]


def test_with_one_gpu_or_none_the_worker_runs_as_it_is():
    assert placements("each", 1, "trainhub@box", environ={}) == [
        WorkerPlacement("trainhub@box", None, 1)]
    assert placements("each", 0, "trainhub@box", environ={}) == [
        WorkerPlacement("trainhub@box", None, 0)]


def test_pinning_keeps_to_the_gpus_a_container_already_chose():
    plan = placements("each", 2, "w@h", environ={"CUDA_VISIBLE_DEVICES": "5,7"})
    assert [p.visible_devices for p in plan] == ["5", "7"]
    assert placements("1", 2, "w@h", environ={"CUDA_VISIBLE_DEVICES": "5,7"}) == [
        WorkerPlacement("w@h", "7", 1)]


def test_one_worker_may_hold_several_gpus_for_multi_gpu_jobs():
    assert placements("all", 4, "w@h", environ={}) == [WorkerPlacement("w@h", None, 4)]
    assert placements("0,2", 4, "w@h", environ={}) == [WorkerPlacement("w@h", "0,2", 2)]


@pytest.mark.parametrize(("gpus", "gpu_count", "message"), [
    ("2", 2, "this machine has 2 visible GPU(s) (indices 0 to 1), each named once"),
    ("0,0", 2, "each named once"),
    ("first", 2, "use 'each', 'all' or GPU indices such as 0,1"),
    ("0", 0, "this machine has no visible GPU"),
])
def test_a_bad_gpu_choice_says_what_is_allowed(gpus, gpu_count, message):
    with pytest.raises(GpuChoiceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        placements(gpus, gpu_count, "w@h", environ={})


def test_the_worker_command_starts_one_pinned_process_per_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    started = []
    monkeypatch.setattr(server, "start", lambda argv, env: started.append((argv, env)) or argv)
    monkeypatch.setattr(server, "supervise", lambda children, what: len(children))

    assert server.run_worker(1, None, "trainhub@box", "each") == 2
    assert [(argv[argv.index("--name") + 1], env["CUDA_VISIBLE_DEVICES"])
            for argv, env in started] == [("trainhub-gpu0@box", "0"), ("trainhub-gpu1@box", "1")]
    # Each child holds the GPU it was given, all of it: it does not split again.
    assert all(argv[argv.index("--gpus") + 1] == "all" for argv, _ in started)


def test_the_worker_command_refuses_a_bad_gpu_choice_with_one_line(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert server.run_worker(1, None, "w@h", "0") == 2
    assert capsys.readouterr().err == "error: --gpus '0': this machine has no visible GPU\n"
