"""Stopping fit mid-epoch and resuming it from its saved state gives the run that would have
happened: the same metric points and bit-identical weights (on the CPU, same seed)."""
from __future__ import annotations

import io

import pytest
import torch

import models
from core import checkpoint_format as ckpt
from core.jobspec import Hyperparameters
from tests.unit.factories import one_torch_thread, synthetic_dataset
from worker.checkpointing import build_blob, training_state_of
from worker.control import CheckpointPolicy, RunControl, StopFlag
from worker.loop import fit
from worker.reporting import NullReporter

CPU = torch.device("cpu")
SPEC = {"model": "lenet", "dataset": "synthetic", "hyperparameters": {}}


class StopAtStep(NullReporter):
    """Sets the stop flag once the loop has logged a point at `step` or later."""

    def __init__(self, stop: StopFlag, step: int):
        super().__init__()
        self.stop, self.step = stop, step

    def metrics(self, points):
        super().metrics(points)
        if any(p.step >= self.step for p in points):
            self.stop.set("preempt")


def params(**kw) -> Hyperparameters:
    base = dict(epochs=3, batch_size=4, log_every=5, lr=0.05, seed=3)
    return Hyperparameters(**{**base, **kw})


def as_file(blob: dict) -> dict:
    """Through torch.save and a weights-only load, as a real resume file goes."""
    buf = io.BytesIO()
    torch.save(blob, buf)
    return ckpt.load(buf.getvalue())


def run_with_stops(dataset, hp, stop_steps: list[int]):
    """Train, stopping at each of stop_steps and resuming each time from a saved file."""
    points, resume, model = [], None, None
    for stop_step in [*stop_steps, None]:
        torch.manual_seed(hp.seed)
        model = models.build("lenet", dataset.shape, len(dataset.classes))
        stop = StopFlag()
        reporter = StopAtStep(stop, stop_step) if stop_step else NullReporter()
        if resume is not None:
            model.load_state_dict(resume["model_state"])
        result = fit(model, dataset, hp, CPU, RunControl(reporter, check_every_s=1e9, stop=stop),
                     resume_from=training_state_of(resume) if resume else None)
        points.extend(reporter.points)
        if stop_step is None:
            assert not result.stopped
            return points, model, result
        # It stops at the first log point at or after stop_step.
        assert result.stop_reason == "preempt" and stop_step <= result.step < stop_step + 5
        state = result.state
        resume = as_file(build_blob(state.model, state.state_dict(), state.epoch - 1,
                                    state.step, state.final_metrics, SPEC, dataset))
    raise AssertionError("unreachable")


@pytest.mark.parametrize("hp", [params(), params(scheduler="onecycle", optimizer="adam",
                                                   lr=0.01),
                                params(scheduler="step", validation_fraction=0.2)],
                         ids=["sgd", "adam-onecycle", "step-validation"])
def test_a_run_stopped_and_resumed_mid_epoch_matches_the_undisturbed_run(hp):
    dataset = synthetic_dataset(50, 20, (3, 8, 8), 4, seed=1)
    with one_torch_thread():
        plain, plain_model, plain_result = run_with_stops(dataset, hp, [])
        # 13 batches an epoch (10 with validation): stops inside epochs 1, 2 and 3.
        stopped, model, result = run_with_stops(dataset, hp, [5, 15, 30])
    key = lambda p: (p.name, p.step)  # noqa: E731
    timing = {"samples_per_second"}
    strip = lambda pts: sorted((p for p in pts if p.name not in timing), key=key)  # noqa: E731
    assert strip(stopped) == strip(plain)  # every point once, bit-identical values
    assert [p.step for p in stopped if p.name == "loss"] == \
        [p.step for p in plain if p.name == "loss"]
    for name, tensor in plain_model.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    assert result.step == plain_result.step and result.epochs_completed == 3
    assert {k: v for k, v in result.final_metrics.items() if k not in timing} == \
        {k: v for k, v in plain_result.final_metrics.items() if k not in timing}


class ShowsProgress(StopAtStep):
    """StopAtStep that keeps every (epoch, step) the job's progress would show."""

    def __init__(self, stop: StopFlag, step: int | None = None):
        super().__init__(stop, step if step is not None else 10**9)
        self.shown: list[tuple[int, int]] = []

    def progress(self, epoch: int, step: int, total_steps: int) -> None:
        self.shown.append((epoch, step))


def test_a_run_resumed_mid_epoch_shows_the_epoch_it_stopped_in_never_the_one_before():
    """#20 finding 4: a job handed back in its second epoch showed {"epoch": 2, ...} while
    queued and {"epoch": 1, ...} once running again (fit's first progress said the epoch
    before the state's, right only at an epoch's boundary)."""
    dataset = synthetic_dataset(50, 20, (3, 8, 8), 4, seed=1)  # 13 mini-batches an epoch
    hp = params()
    with one_torch_thread():
        torch.manual_seed(hp.seed)
        model = models.build("lenet", dataset.shape, len(dataset.classes))
        stop = StopFlag()
        first = ShowsProgress(stop, 15)  # the log point at batch 5 of epoch 2 (step 18)
        result = fit(model, dataset, hp, CPU, RunControl(first, check_every_s=1e9, stop=stop))
        state = result.state
        assert result.stopped and (state.epoch, state.batch, state.step) == (2, 5, 18)
        resume = as_file(build_blob(state.model, state.state_dict(), state.epoch - 1,
                                    state.step, state.final_metrics, SPEC, dataset))
        model = models.build("lenet", dataset.shape, len(dataset.classes))
        model.load_state_dict(resume["model_state"])
        second = ShowsProgress(StopFlag())
        fit(model, dataset, hp, CPU, RunControl(second, check_every_s=1e9),
            resume_from=training_state_of(resume))
    assert first.shown[-1] == (2, 18)  # what the queued job shows
    assert second.shown[0] == (2, 18)  # and the same once it runs again
    epochs = [epoch for epoch, _step in first.shown + second.shown]
    assert epochs == sorted(epochs) and epochs[-1] == 3


def test_checkpoint_policy_hands_the_state_over_every_n_steps():
    dataset = synthetic_dataset(40, 8, (1, 4, 4), 3, seed=0)
    seen = []
    with one_torch_thread():
        model = models.build("mlp", dataset.shape, len(dataset.classes))
        fit(model, dataset, params(epochs=2, log_every=100), CPU, RunControl(
            check_every_s=1e9,
            checkpoint=lambda state: seen.append((state.epoch, state.batch, state.step)),
            policy=CheckpointPolicy(every_steps=4)))
    assert [s for _, _, s in seen] == [4, 8, 12, 16, 20]
    assert seen[2] == (2, 2, 12)  # 10 batches an epoch: step 12 is batch 2 of epoch 2


def test_max_seconds_stops_with_timeout():
    dataset = synthetic_dataset(40, 8, (1, 4, 4), 3, seed=0)
    model = models.build("mlp", dataset.shape, len(dataset.classes))
    result = fit(model, dataset, params(epochs=1000, log_every=100), CPU,
                 RunControl(check_every_s=0.0, max_seconds=0.2))
    assert result.stopped and result.stop_reason == "timeout"
    # It trained, and stopped long before the end (a loaded machine may not finish even
    # the first epoch in 0.2 s, so the count of whole epochs is not the measure).
    assert result.step > 0 and result.epochs_completed < 1000
