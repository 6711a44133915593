"""DDP's arithmetic (each rank's share of the global batch) and fit() on the distributed
path with one rank in this process: a real gloo group (and NCCL where there is a GPU)."""
from __future__ import annotations

import pytest
import torch
from torch.distributed import TCPStore

import models
from core.epochs import num_batches
from core.jobspec import Hyperparameters
from core.tensor_datasets import Split
from tests.unit.factories import one_torch_thread, synthetic_dataset
from worker.checkpointing import build_blob, training_state_of
from worker.control import RunControl, StopFlag
from worker.data import batches, shard_order
from worker.ddp import group as distributed
from worker.ddp.group import Distributed, join, leave
from worker.loop import fit
from worker.reporting import NullReporter

CPU = torch.device("cpu")
TIMING = {"samples_per_second"}


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("n", [1, 2, 5, 17, 64, 100])
def test_each_global_batch_is_the_single_process_batch_spread_evenly(n, world_size):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    padded = torch.cat([order, order.repeat(world_size)])[:n + (-n % world_size)]
    for per_rank in (1, 2, 5):
        batch_size = per_rank * world_size
        shards = [shard_order(order, r, world_size) for r in range(world_size)]
        assert len({len(s) for s in shards}) == 1  # equal shares: no rank waits on a short one
        steps = [len(range(0, len(s), per_rank)) for s in shards]
        assert steps == [num_batches(n, batch_size)] * world_size  # as many steps as one process
        for i in range(steps[0]):
            parts = [s[i * per_rank:(i + 1) * per_rank] for s in shards]
            assert all(len(p) > 0 for p in parts)
            together = sorted(torch.cat(parts).tolist())
            assert together == sorted(padded[i * batch_size:(i + 1) * batch_size].tolist())
        assert set(torch.cat(shards).tolist()) == set(range(n))  # every sample, every epoch


def test_batches_over_a_share_stop_at_its_end():
    split = Split(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1),
                  torch.arange(10))
    share = shard_order(torch.arange(10), 1, 4)  # 12 padded: indices 1, 5, 9
    got = [labels.tolist() for _, labels in batches(split, 2, torch.zeros(1, 1, 1, 1),
                                                       torch.ones(1, 1, 1, 1), order=share)]
    assert got == [[1, 5], [9]]


@pytest.fixture
def one_rank():
    """A one-rank process group in this process, as a DDP job's rank 0 joins it."""
    store = TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    group = join(0, 1, CPU, store)
    yield group
    leave()


def params(**kw) -> Hyperparameters:
    return Hyperparameters(**{**dict(epochs=2, batch_size=4, log_every=5, lr=0.05, seed=3),
                              **kw})


def train(dataset, hp, dist=None, stop_at=None, resume=None):
    """fit() from a fresh model (or a saved state), stopping at the first log point at or
    after stop_at; returns (points, result)."""
    torch.manual_seed(hp.seed)
    model = models.build("lenet", dataset.shape, len(dataset.classes))
    if resume is not None:
        model.load_state_dict(resume["model_state"])
    stop = StopFlag()

    class Reporter(NullReporter):
        def metrics(self, points):
            super().metrics(points)
            if stop_at is not None and any(p.step >= stop_at for p in points):
                stop.set("preempt")

    reporter = Reporter()
    result = fit(model, dataset, hp, CPU, RunControl(reporter, check_every_s=1e9, stop=stop,
                                                     dist=dist),
                 resume_from=training_state_of(resume) if resume else None)
    return reporter.points, result


def strip(points):
    return sorted(((p.name, p.step, p.value) for p in points if p.name not in TIMING))


def test_one_rank_on_the_distributed_path_trains_exactly_like_the_plain_loop(one_rank):
    dataset = synthetic_dataset(50, 20, (3, 8, 8), 4, seed=1)
    hp = params(validation_fraction=0.2)
    with one_torch_thread():
        plain, plain_result = train(dataset, hp)
        ddp, ddp_result = train(dataset, hp, one_rank)
    assert strip(ddp) == strip(plain)
    assert ddp_result.step == plain_result.step and not ddp_result.stopped
    for name, tensor in plain_result.state.model.state_dict().items():
        assert torch.equal(tensor, ddp_result.state.model.state_dict()[name]), name


def test_rank_0s_stop_is_agreed_at_a_sync_step_and_the_run_resumes_from_it(one_rank,
                                                                             monkeypatch):
    monkeypatch.setattr(distributed, "SYNC_TARGET_S", 0.0)  # a verdict at every step
    dataset = synthetic_dataset(50, 20, (3, 8, 8), 4, seed=1)
    hp = params()
    with one_torch_thread():
        plain, _ = train(dataset, hp)
        first, stopped = train(dataset, hp, one_rank, stop_at=15)
        # 13 steps an epoch: the first log point from step 15 on is batch 5 of epoch 2.
        assert stopped.stop_reason == "preempt" and stopped.step == 18
        state = stopped.state
        blob = build_blob(state.model, state.state_dict(), state.epoch - 1, state.step,
                          state.final_metrics, {"model": "lenet", "hyperparameters": {}},
                          dataset)
        # A new attempt: a new view of the group, as the runner makes one per attempt.
        rest, _ = train(dataset, hp, Distributed(0, 1, CPU), resume=blob)
    assert strip(first + rest) == strip(plain)


def test_verdicts_come_at_the_pace_rank_0_sets(one_rank):
    assert one_rank.agree(0, None, False) == (None, False)  # the first step: a verdict
    assert one_rank.next_sync == 1  # nothing measured yet: the next step
    assert one_rank.agree(1, None, False) == (None, False)
    assert one_rank.next_sync > 1  # now paced by the measured step time
    later = one_rank.next_sync
    # Wishes between sync steps wait for the next one, and are not forgotten.
    assert one_rank.agree(later - 1, "cancel", True) == (None, False)
    assert one_rank.agree(later, None, False) == ("cancel", True)
    assert one_rank.agree(one_rank.next_sync, None, False) == (None, False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_one_rank_under_nccl_trains_like_the_plain_loop_on_the_gpu():
    """The acceptance check on a GPU machine: the DDP path with NCCL, one rank."""
    cuda = torch.device("cuda", 0)
    dataset = synthetic_dataset(64, 32, (3, 8, 8), 4, seed=1)
    hp = params(epochs=2)
    torch.manual_seed(hp.seed)
    plain_model = models.build("lenet", dataset.shape, len(dataset.classes))
    plain = NullReporter()
    fit(plain_model, dataset, hp, cuda, RunControl(plain, check_every_s=1e9))
    store = TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    group = join(0, 1, cuda, store)
    try:
        assert distributed.backend_for(cuda) == "nccl"
        torch.manual_seed(hp.seed)
        model = models.build("lenet", dataset.shape, len(dataset.classes))
        reporter = NullReporter()
        result = fit(model, dataset, hp, cuda, RunControl(reporter, check_every_s=1e9,
                                                          dist=group))
    finally:
        leave()
    assert result.step == num_batches(64, 4) * 2 and not result.stopped
    got = dict(((p.name, p.step), p.value) for p in reporter.points)
    for p in plain.points:  # a GPU need not be bitwise reproducible
        if p.name not in TIMING:
            assert got[(p.name, p.step)] == pytest.approx(p.value, rel=1e-2, abs=1e-3)


def test_no_host_sync_per_batch_on_the_distributed_path(one_rank, monkeypatch):
    """Verdicts are read from a CPU tensor; device values only at log points and epoch ends:
    twice the batches, the same number of .item() calls."""
    calls = []
    original = torch.Tensor.item

    def counting_item(self):
        calls.append(self.device)
        return original(self)

    counts = []
    for n in (64, 128):
        dataset = synthetic_dataset(n, 8, (1, 4, 4), 3)
        hp = params(epochs=2, batch_size=2, log_every=n // 8)
        torch.manual_seed(0)
        model = models.build("mlp", dataset.shape, len(dataset.classes))
        calls.clear()
        monkeypatch.setattr(torch.Tensor, "item", counting_item)
        try:
            result = fit(model, dataset, hp, CPU, RunControl(check_every_s=1e9,
                                                             dist=Distributed(0, 1, CPU)))
        finally:
            monkeypatch.undo()
        assert result.step == n
        counts.append(len(calls))
    assert counts[0] == counts[1] <= 8 + 8 * 2


def test_a_helper_rank_trains_through_the_group_and_writes_nothing(caplog):
    """worker.ddp.rank's main(), here as the only rank of a group, in this process."""
    import logging

    from core.config import get_settings
    from worker.ddp import rank as ddp_rank
    from worker.ddp.launch import parse_record, ready_key

    artifacts = get_settings().artifacts_dir
    before = sorted(artifacts.rglob("*")) if artifacts.exists() else []
    store = TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    spec = {"model": "mlp", "hyperparameters": {"epochs": 1, "batch_size": 64,
                                                "log_every": 5}}
    with one_torch_thread(), caplog.at_level(logging.INFO, logger="worker.ddp.rank"):
        ddp_rank.main({"rank": 0, "world_size": 1, "device": "cpu", "threads": 1,
                       "port": store.port, "spec": spec, "dataset": {"builtin": "digits"},
                       "resume_key": None})
    records = [r for r in caplog.records if r.name == "worker.ddp.rank"]
    assert store.get(ready_key(0)) == b"1"
    assert (sorted(artifacts.rglob("*")) if artifacts.exists() else []) == before
    messages = [r.getMessage() for r in records]
    assert messages[0].startswith("started on cpu") and messages[-1] == "finished at step 23"
    # What rank 0 reads back of each record, and of a line that is not one.
    line = ddp_rank.JsonLines().format(records[0])
    assert parse_record(line) == (logging.INFO, "worker.ddp.rank", messages[0])
    assert parse_record("[W gloo] a warning\n") == (logging.WARNING, "worker.ddp.rank",
                                                    "[W gloo] a warning")


@pytest.mark.parametrize("requested, gpus, expected", [
    ("cpu", 4, ["cpu", "cpu"]),
    ("cuda", 2, ["cuda:0", "cuda:1"]),
    ("auto", 2, ["cuda:0", "cuda:1"]),
    ("auto", 1, ["cpu", "cpu"]),  # too few GPUs for auto: CPU processes
    ("cuda", 1, "world_size 2 needs 2 CUDA devices on one worker; this worker has 1"),
    ("cuda", 0, "world_size 2 needs 2 CUDA devices on one worker; this worker has 0"),
])
def test_each_rank_gets_a_gpu_of_its_own_or_the_cpu(monkeypatch, requested, gpus, expected):
    from worker.ddp.launch import rank_devices

    # The one mock the rules allow: the GPUs this machine would have.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    if isinstance(expected, str):
        with pytest.raises(RuntimeError, match=expected):
            rank_devices(requested, 2)
    else:
        assert [str(d) for d in rank_devices(requested, 2)] == expected
