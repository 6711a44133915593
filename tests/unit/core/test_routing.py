"""The routing decision: which queue a job goes to, which a worker consumes, and the reason
a queued job gives when no running worker can take it."""
from __future__ import annotations

import pytest

from core.routing import job_queue, waiting_reason, worker_queues


@pytest.mark.parametrize(("device", "queue"), [("cuda", "th.gpu"), ("cpu", "th.cpu"),
                                               ("auto", "th")])
def test_a_job_goes_to_its_devices_queue(device, queue):
    assert job_queue("th", device) == queue


def test_a_worker_consumes_its_hardwares_queue_and_the_shared_one():
    assert worker_queues("th", has_gpu=True) == ["th.gpu", "th"]
    assert worker_queues("th", has_gpu=False) == ["th.cpu", "th"]


@pytest.mark.parametrize("has_gpu", [True, False])
@pytest.mark.parametrize("device", ["auto", "cpu", "cuda"])
def test_a_job_reaches_a_worker_exactly_when_the_hardware_serves_it(has_gpu, device):
    reachable = job_queue("th", device) in worker_queues("th", has_gpu)
    serves = device == "auto" or (device == "cuda") == has_gpu
    assert reachable == serves


def test_a_cuda_job_with_only_cpu_workers_waits_for_a_gpu_worker():
    live = set(worker_queues("th", has_gpu=False))
    reason = waiting_reason(job_queue("th", "cuda"), "cuda", live)
    assert reason == "waiting for a GPU worker: no running worker consumes queue 'th.gpu'"
    assert waiting_reason(job_queue("th", "cpu"), "cpu", live) is None
    assert waiting_reason(job_queue("th", "auto"), "auto", live) is None


def test_with_no_worker_at_all_every_job_says_what_it_waits_for():
    assert "a CPU worker" in waiting_reason("th.cpu", "cpu", set())
    assert waiting_reason("th", "auto", set()) == (
        "waiting for a worker: no running worker consumes queue 'th'")
