"""The opt-in training options (worker/accel.py, worker/loop.py): compile with its eager
fallback, amp (bf16, fp16 with a GradScaler), channels_last and on-device augmentation; on
the CPU (this suite has no GPU)."""
from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

import models
import worker.accel as accel_mod
from core.jobspec import Hyperparameters
from tests.unit.factories import one_torch_thread, synthetic_dataset
from tests.unit.worker.test_distributed import one_rank  # noqa: F401  (a fixture)
from tests.unit.worker.test_distributed import params as ddp_params
from tests.unit.worker.test_distributed import strip as ddp_strip
from tests.unit.worker.test_distributed import train as ddp_train
from tests.unit.worker.test_resume import params as resume_params
from tests.unit.worker.test_resume import run_with_stops
from worker.accel import Accel, augment_batch
from worker.control import RunControl
from worker.data import load_dataset
from worker.loop import fit
from worker.reporting import NullReporter

CPU = torch.device("cpu")
TIMING = {"samples_per_second"}


def hp(**kw) -> Hyperparameters:
    base = dict(epochs=2, batch_size=8, log_every=5, lr=0.05, seed=3)
    return Hyperparameters(**{**base, **kw})


def run(dataset, params, model=None, on_epoch_end=None):
    torch.manual_seed(params.seed)
    model = model if model is not None else models.build("lenet", dataset.shape,
                                                         len(dataset.classes))
    reporter = NullReporter()
    result = fit(model, dataset, params, CPU,
                 RunControl(reporter, check_every_s=1e9, on_epoch_end=on_epoch_end))
    points = [(p.name, p.epoch, p.step, p.value) for p in reporter.points
              if p.name not in TIMING]
    return points, result, model


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_dataset(64, 32, (3, 8, 8), 4, seed=1)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    return load_dataset("digits", root / "datasets", root / "cache", allow_download=False)


# ---- off: exactly the old training ----------------------------------------------------------

def test_options_off_train_exactly_as_without_them(synthetic):
    plain, _, _ = run(synthetic, hp())
    for off in (dict(compile=False, amp="off", channels_last=False, augment=None),
                dict(augment={"random_crop_padding": 0, "horizontal_flip": False})):
        assert run(synthetic, hp(**off))[0] == plain
    state = run(synthetic, hp())[1].state.state_dict()
    assert state["scaler"] is None and state["augment"] is None


# ---- each option trains ---------------------------------------------------------------------

@pytest.mark.parametrize("options", [
    dict(amp="bf16"), dict(amp="fp16"), dict(channels_last=True),
    dict(augment={"random_crop_padding": 1, "horizontal_flip": True}),
    dict(amp="bf16", channels_last=True, augment={"random_crop_padding": 1}),
], ids=["bf16", "fp16", "channels_last", "augment", "all"])
def test_each_option_trains_lenet_on_digits(digits, options):
    params = hp(optimizer="adam", lr=0.003, batch_size=16, epochs=3, log_every=30, **options)
    points, result, model = run(digits, params)
    losses = [v for name, _, _, v in points if name == "loss"]
    assert losses and all(math.isfinite(v) for v in losses)
    assert all(isinstance(v, float) for _, _, _, v in points)
    assert losses[-1] < losses[0]
    # 8x8 digits shifted and mirrored are a harder task in three epochs
    assert result.final_metrics["eval_accuracy"] >= (0.5 if "augment" in options else 0.7)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float


def test_fp16_keeps_a_grad_scaler_whose_state_is_saved(synthetic):
    _, result, _ = run(synthetic, hp(amp="fp16"))
    assert isinstance(result.state.scaler, torch.amp.GradScaler)
    saved = result.state.state_dict()["scaler"]
    assert saved["scale"] > 0 and "_growth_tracker" in saved
    assert run(synthetic, hp(amp="bf16"))[1].state.scaler is None


def test_evaluation_runs_under_autocast(synthetic, monkeypatch):
    seen = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 8 * 8, 4)

        def forward(self, x):
            out = self.fc(x.flatten(1))
            seen.append((self.training, out.dtype))
            return out

    run(synthetic, hp(amp="bf16", epochs=1), model=Recorder())
    assert {dtype for training, dtype in seen if not training} == {torch.bfloat16}
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}


def test_channels_last_model_and_batches(synthetic):
    seen = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            seen.append(x.is_contiguous(memory_format=torch.channels_last))
            return self.conv(x).mean((2, 3))

    model = Recorder()
    run(synthetic, hp(channels_last=True, epochs=1), model=model)
    assert seen and all(seen)
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)


def _count_items(monkeypatch, dataset, params) -> int:
    calls = [0]
    real_item = torch.Tensor.item

    def counting_item(self):
        calls[0] += 1
        return real_item(self)

    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    try:
        run(dataset, params)
    finally:
        monkeypatch.undo()
    return calls[0]


def test_no_host_sync_per_batch_with_the_options_on(monkeypatch):
    options = dict(amp="fp16", channels_last=True, log_every=1000,
                   augment={"random_crop_padding": 2, "horizontal_flip": True})
    small = _count_items(monkeypatch, synthetic_dataset(64, 16, (3, 8, 8), 4), hp(**options))
    large = _count_items(monkeypatch, synthetic_dataset(256, 16, (3, 8, 8), 4), hp(**options))
    assert large == small  # four times the batches, the same syncs


# ---- augmentation ---------------------------------------------------------------------------

def test_augment_batch_flips_and_crops_windows_of_the_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 6, 5)
    flipped = augment_batch(x, 0, True, g)
    same = [torch.equal(a, b) for a, b in zip(flipped, x)]
    mirrored = [torch.equal(a, b.flip(2)) for a, b in zip(flipped, x)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 10 < sum(mirrored) < 54  # p = 0.5 per image
    cropped = augment_batch(x, 2, False, g)
    padded = nn.functional.pad(x, (2, 2, 2, 2))
    for out, src in zip(cropped, padded):
        assert any(torch.equal(out, src[:, i:i + 6, j:j + 5])
                   for i in range(5) for j in range(5))
    assert not torch.equal(cropped, x)
    assert augment_batch(x, 0, False, g) is x


def test_augment_changes_training_batches_but_not_evaluation(synthetic):
    def record(options):
        seen = {True: [], False: []}

        class Recorder(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(3 * 8 * 8, 4)

            def forward(self, x):
                seen[self.training].append(x.clone())
                return self.fc(x.flatten(1))

        run(synthetic, hp(epochs=1, **options), model=Recorder())
        return seen

    plain = record({})
    augmented = record({"augment": {"random_crop_padding": 3, "horizontal_flip": True}})
    assert len(plain[True]) == len(augmented[True])
    assert not all(torch.equal(a, b) for a, b in zip(plain[True], augmented[True]))
    assert len(plain[False]) == len(augmented[False])
    assert all(torch.equal(a, b) for a, b in zip(plain[False], augmented[False]))


def test_augmented_runs_are_reproducible_for_a_seed(synthetic):
    options = {"augment": {"random_crop_padding": 2, "horizontal_flip": True}}
    first = run(synthetic, hp(**options))[0]
    assert run(synthetic, hp(**options))[0] == first
    assert run(synthetic, hp(seed=4, **options))[0] != first
    assert first != run(synthetic, hp())[0]


@pytest.mark.parametrize("options", [
    dict(augment={"random_crop_padding": 2, "horizontal_flip": True}),
    dict(amp="fp16"),
], ids=["augment", "fp16"])
def test_a_resumed_run_matches_the_undisturbed_one(options):
    """The augmentation generator's and the GradScaler's states are in the resume state."""
    dataset = synthetic_dataset(50, 20, (3, 8, 8), 4, seed=1)
    params = resume_params(**options)
    with one_torch_thread():
        plain, plain_model, _ = run_with_stops(dataset, params, [])
        stopped, model, _ = run_with_stops(dataset, params, [5, 15, 30])
    key = lambda p: (p.name, p.step)  # noqa: E731
    strip = lambda pts: sorted((p for p in pts if p.name not in TIMING), key=key)  # noqa: E731
    assert strip(stopped) == strip(plain)
    for name, tensor in plain_model.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


# ---- compile --------------------------------------------------------------------------------

class FailingCompiled:
    """What torch.compile returns when the backend fails at the first call."""

    def __init__(self):
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        raise torch._dynamo.exc.TorchDynamoException("backend exploded")


@pytest.mark.parametrize("how", ["call", "compile"])
def test_compile_failure_falls_back_to_eager_and_trains_as_eager(synthetic, monkeypatch,
                                                                 caplog, how):
    eager, eager_result, eager_model = run(synthetic, hp())
    compiled = FailingCompiled()

    def fake_compile(model, *args, **kwargs):
        if how == "compile":
            raise RuntimeError("no compiler here")
        return compiled

    monkeypatch.setattr(accel_mod.torch, "compile", fake_compile)
    with caplog.at_level(logging.WARNING, logger="worker.accel"):
        points, result, model = run(synthetic, hp(compile=True))
    assert points == eager  # the failed step was retried eagerly: nothing lost
    assert compiled.calls == (1 if how == "call" else 0)  # never tried again
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "eager" in warnings[0].getMessage()
    for name, tensor in eager_model.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_a_real_failing_backend_falls_back(synthetic, monkeypatch, caplog):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("broken backend")

    real = torch.compile
    monkeypatch.setattr(accel_mod.torch, "compile",
                        lambda model: real(model, backend=broken_backend))
    torch._dynamo.reset()
    eager = run(synthetic, hp(epochs=1))[0]
    with caplog.at_level(logging.WARNING, logger="worker.accel"):
        points = run(synthetic, hp(epochs=1, compile=True))[0]
    assert points == eager
    assert any("eager" in r.getMessage() for r in caplog.records)


def test_compiled_training_saves_the_plain_models_names(synthetic, monkeypatch):
    """Dynamo tracing with its eager backend (no C compiler); the checkpoints' weights are
    the plain model's: no `_orig_mod.` prefix."""
    real = torch.compile
    monkeypatch.setattr(accel_mod.torch, "compile", lambda model: real(model, backend="eager"))
    torch._dynamo.reset()
    saved = []
    points, result, model = run(synthetic, hp(epochs=1, compile=True),
                                on_epoch_end=lambda end: saved.append(end.model.state_dict()))
    plain = models.build("lenet", synthetic.shape, len(synthetic.classes)).state_dict()
    assert saved and set(saved[0]) == set(plain)
    assert not any(k.startswith("_orig_mod.") for k in saved[0])
    eager = run(synthetic, hp(epochs=1))[0]
    for (n1, e1, s1, v1), (n2, e2, s2, v2) in zip(points, eager):
        assert (n1, e1, s1) == (n2, e2, s2) and v1 == pytest.approx(v2, rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_real_inductor_compile_trains_like_eager(synthetic):
    """torch.compile with its default backend (inductor: a C compiler, ~20 s on a CPU)."""
    torch._dynamo.reset()
    points, result, _ = run(synthetic, hp(epochs=1, compile=True))
    eager = run(synthetic, hp(epochs=1))[0]
    for (n1, e1, s1, v1), (n2, e2, s2, v2) in zip(points, eager):
        assert (n1, e1, s1) == (n2, e2, s2) and v1 == pytest.approx(v2, rel=1e-3, abs=1e-4)


def test_accel_off_by_default():
    a = Accel(nn.Linear(2, 2), Hyperparameters(), CPU)
    assert not a.compiled and a.dtype is None and a.make_scaler() is None
    assert a.augment_generator(0) is None and not a.channels_last


# ---- under DDP (one gloo rank in this process) ----------------------------------------------

@pytest.mark.parametrize("options", [
    dict(amp="bf16", channels_last=True,
         augment={"random_crop_padding": 2, "horizontal_flip": True}),
    dict(amp="fp16"),
    dict(compile=True),
], ids=["bf16-channels_last-augment", "fp16", "compile-failing"])
def test_one_ddp_rank_with_the_options_trains_like_the_plain_loop(one_rank, monkeypatch,
                                                                  options):
    monkeypatch.setattr(accel_mod.torch, "compile", lambda model: FailingCompiled())
    dataset = synthetic_dataset(50, 20, (3, 8, 8), 4, seed=1)
    params = ddp_params(**options)
    with one_torch_thread():
        plain, plain_result = ddp_train(dataset, params)
        ddp, ddp_result = ddp_train(dataset, params, one_rank)
    assert ddp_strip(ddp) == ddp_strip(plain)
    for name, tensor in plain_result.state.model.state_dict().items():
        assert torch.equal(tensor, ddp_result.state.model.state_dict()[name]), name
