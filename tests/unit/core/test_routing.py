"""The routing decision: which queue a job goes to, which a worker consumes, and the reason
a queued job gives when no running worker can take it."""
from __future__ import annotations

import pytest

from core.routing import job_queue, waiting_reason, worker_queues


def spec(device: str, world_size: int = 1) -> dict:
    return {"device": device, "hyperparameters": {"world_size": world_size}}


@pytest.mark.parametrize(("device", "queue"), [("cuda", "th.gpu"), ("cpu", "th.cpu"),
                                               ("auto", "th")])
def test_a_job_goes_to_its_devices_queue(device, queue):
    assert job_queue("th", spec(device)) == queue


def test_a_spec_without_world_size_is_a_one_process_job():
    assert job_queue("th", {"device": "cuda", "hyperparameters": {}}) == "th.gpu"
    assert job_queue("th", {}) == "th"


def test_a_multi_gpu_job_goes_to_the_queue_of_workers_holding_that_many_gpus():
    assert job_queue("th", spec("cuda", 4)) == "th.gpu.x4"
    # CPU ranks are processes any worker can start: no special queue.
    assert job_queue("th", spec("cpu", 4)) == "th.cpu"
    assert job_queue("th", spec("auto", 2)) == "th"


def test_a_worker_consumes_its_hardwares_queues_and_the_shared_one():
    assert worker_queues("th", gpu_count=1) == ["th.gpu", "th"]
    assert worker_queues("th", gpu_count=0) == ["th.cpu", "th"]
    assert worker_queues("th", gpu_count=3) == ["th.gpu", "th.gpu.x2", "th.gpu.x3", "th"]


@pytest.mark.parametrize("gpu_count", [0, 1, 2, 4])
@pytest.mark.parametrize("world_size", [1, 2, 4])
@pytest.mark.parametrize("device", ["auto", "cpu", "cuda"])
def test_a_job_reaches_a_worker_exactly_when_the_hardware_serves_it(gpu_count, world_size,
                                                                    device):
    reachable = job_queue("th", spec(device, world_size)) in worker_queues("th", gpu_count)
    if device == "auto":
        serves = True
    elif device == "cpu":
        serves = gpu_count == 0
    else:
        serves = gpu_count >= world_size
    assert reachable == serves


def test_a_cuda_job_with_only_cpu_workers_waits_for_a_gpu_worker():
    live = set(worker_queues("th", gpu_count=0))
    reason = waiting_reason(job_queue("th", spec("cuda")), spec("cuda"), live)
    assert reason == "waiting for a GPU worker: no running worker consumes queue 'th.gpu'"
    assert waiting_reason(job_queue("th", spec("cpu")), spec("cpu"), live) is None
    assert waiting_reason(job_queue("th", spec("auto")), spec("auto"), live) is None


def test_a_two_gpu_job_with_only_one_gpu_workers_waits_for_a_bigger_worker():
    live = set(worker_queues("th", gpu_count=1))
    job = spec("cuda", 2)
    assert waiting_reason(job_queue("th", job), job, live) == (
        "waiting for a worker with 2 GPUs: no running worker consumes queue 'th.gpu.x2'")
    assert waiting_reason(job_queue("th", job), job, live | {"th.gpu.x2"}) is None


def test_with_no_worker_at_all_every_job_says_what_it_waits_for():
    assert "a CPU worker" in waiting_reason("th.cpu", spec("cpu"), set())
    assert waiting_reason("th", spec("auto"), set()) == (
        "waiting for a worker: no running worker consumes queue 'th'")
