"""The training loop (worker/loop.py) against docs/concepts.md's metrics and training loop."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
import worker.loop as loop
from core.jobspec import Hyperparameters
from core.tensor_datasets import ImageDataset, Split
from tests.unit.factories import synthetic_dataset
from worker.control import RunControl
from worker.data import load_dataset, split_validation
from worker.loop import FitResult, evaluate, fit
from worker.recipe import make_criterion, make_optimizer, make_scheduler, resolve_device
from worker.reporting import Metric, NullReporter

CPU = torch.device("cpu")
EPOCH_METRICS = {"train_loss", "train_accuracy", "eval_loss", "eval_accuracy",
                 "samples_per_second", "lr"}
NEVER = 1e9  # check_every_s that never fires by time: should_stop only at log points


# ---- helpers -------------------------------------------------------------------------------

def make_dataset(n_train: int, n_test: int, shape=(1, 4, 4), num_classes: int = 3,
                 seed: int = 0) -> ImageDataset:
    return synthetic_dataset(n_train, n_test, shape, num_classes, seed)


def tiny_model(dataset: ImageDataset) -> nn.Module:
    c, h, w = dataset.shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, len(dataset.classes)))


def hp(**kwargs) -> Hyperparameters:
    kwargs.setdefault("epochs", 1)
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("log_every", 1)
    return Hyperparameters(**kwargs)


class RecordingReporter(NullReporter):
    """NullReporter that also records progress calls and every should_stop consultation."""

    def __init__(self, stop_when=None):
        super().__init__()
        self.progress_calls: list[tuple[int, int, int]] = []
        self.stop_checks: list[int] = []  # number of points received at each consultation
        self.stop_when = stop_when

    def progress(self, epoch: int, step: int, total_steps: int) -> None:
        self.progress_calls.append((epoch, step, total_steps))

    def should_stop(self) -> bool:
        self.stop_checks.append(len(self.points))
        return bool(self.stop_when is not None and self.stop_when(self.points))

    def named(self, name: str) -> list[Metric]:
        return [p for p in self.points if p.name == name]


def run_fit(dataset, params: Hyperparameters, reporter=None, model=None,
            check_every_s: float = NEVER):
    torch.manual_seed(params.seed)  # as worker/runner.py does before building the model
    model = model if model is not None else tiny_model(dataset)
    reporter = reporter if reporter is not None else RecordingReporter()
    result = fit(model, dataset, params, CPU, RunControl(reporter, check_every_s=check_every_s))
    return result, reporter, model


def normalise(split: Split, dataset: ImageDataset) -> torch.Tensor:
    mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std).view(1, -1, 1, 1)
    return (split.images.float() / 255 - mean) / std


# ---- metric points: counts, batch and step numbering ----------------------------------------

@pytest.mark.parametrize("n, b, k, epochs", [
    (50, 4, 3, 2),    # 13 batches (last one short), 4 log points per epoch
    (50, 7, 1, 3),    # log every batch
    (48, 4, 4, 2),    # log point on the epoch's last batch
    (10, 4, 5, 2),    # fewer batches than log_every: one at each epoch's end
    (5, 8, 1, 3),     # batch larger than the split: one short batch per epoch
])
def test_loss_and_epoch_points_follow_the_contract(n, b, k, epochs):
    dataset = make_dataset(n, 12)
    result, rep, _ = run_fit(dataset, hp(epochs=epochs, batch_size=b, log_every=k))

    per_epoch = math.ceil(n / b)
    per_epoch_points = per_epoch // k
    loss = rep.named("loss")
    if per_epoch < k:  # the mean of all the epoch's mini-batches, at its end
        expected = [(e, per_epoch, e * per_epoch) for e in range(1, epochs + 1)]
    else:
        expected = [(e, j * k, (e - 1) * per_epoch + j * k)
                    for e in range(1, epochs + 1) for j in range(1, per_epoch_points + 1)]
    assert [(p.epoch, p.batch, p.step) for p in loss] == expected
    assert all(math.isfinite(p.value) and p.value > 0 for p in loss)

    epoch_points = [p for p in rep.points if p.name != "loss"]
    assert Counter(p.name for p in epoch_points) == {name: epochs for name in EPOCH_METRICS}
    for p in epoch_points:
        assert p.batch == per_epoch
        assert p.step == p.epoch * per_epoch
    assert sorted({p.epoch for p in epoch_points}) == list(range(1, epochs + 1))
    # points arrive in step order, each epoch's loss points before its epoch metrics
    assert [p.step for p in rep.points] == sorted(p.step for p in rep.points)
    assert [p.epoch for p in rep.points] == sorted(p.epoch for p in rep.points)

    total = per_epoch * epochs
    assert result == FitResult(epochs, total, False, result.final_metrics)
    assert set(result.final_metrics) == EPOCH_METRICS
    last = {p.name: p.value for p in epoch_points if p.epoch == epochs}
    assert result.final_metrics == last
    # progress: at the start, at every log point (epoch running, global step), at epoch ends
    expected = [(0, 0, total)]
    for e in range(1, epochs + 1):
        expected += [(e, (e - 1) * per_epoch + b, total)
                     for b in range(k, per_epoch + 1, k)]
        expected.append((e, e * per_epoch, total))
    assert rep.progress_calls == expected


def test_validation_metrics_only_with_a_validation_fraction():
    dataset = make_dataset(50, 12)
    _, without, _ = run_fit(dataset, hp(epochs=2, validation_fraction=0.0))
    assert not [p for p in without.points if p.name.startswith("val_")]

    result, rep, _ = run_fit(dataset, hp(epochs=2, batch_size=4, log_every=2,
                                         validation_fraction=0.2))
    # 10 of 50 samples are held out: 40 train samples = 10 batches per epoch
    per_epoch = 10
    names = Counter(p.name for p in rep.points if p.name != "loss")
    assert names == {name: 2 for name in EPOCH_METRICS | {"val_loss", "val_accuracy"}}
    assert [p.step for p in rep.named("val_loss")] == [per_epoch, 2 * per_epoch]
    assert len(rep.named("loss")) == 2 * (per_epoch // 2)
    assert result.step == 2 * per_epoch
    assert {"val_loss", "val_accuracy"} <= set(result.final_metrics)


def test_epoch_metrics_match_a_recomputation_on_the_trained_model():
    dataset = make_dataset(40, 30, num_classes=4, seed=3)
    result, _, model = run_fit(dataset, hp(epochs=2, batch_size=5, validation_fraction=0.25,
                                           optimizer="adam", lr=0.05))
    model.eval()
    with torch.no_grad():
        logits = model(normalise(dataset.test, dataset))
        assert result.final_metrics["eval_loss"] == pytest.approx(
            F.cross_entropy(logits, dataset.test.labels).item(), rel=1e-5)
        assert result.final_metrics["eval_accuracy"] == pytest.approx(
            (logits.argmax(1) == dataset.test.labels).double().mean().item())
        _, val = split_validation(dataset.train, 0.25, 0)
        val_logits = model(normalise(val, dataset))
        assert result.final_metrics["val_loss"] == pytest.approx(
            F.cross_entropy(val_logits, val.labels).item(), rel=1e-5)
        assert result.final_metrics["val_accuracy"] == pytest.approx(
            (val_logits.argmax(1) == val.labels).double().mean().item())
    assert result.final_metrics["samples_per_second"] > 0


# ---- the running loss ---------------------------------------------------------------------

def test_running_loss_is_the_mean_of_the_batches_since_the_last_log_point(monkeypatch):
    recorded: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    real = loop.make_criterion

    def recording_criterion(loss_name, num_classes):
        criterion = real(loss_name, num_classes)

        def wrapped(outputs, labels):
            loss = criterion(outputs, labels)
            if torch.is_grad_enabled():  # training batches only, not evaluate()
                recorded.append((loss.detach().clone(), outputs.detach().clone(),
                                 labels.clone()))
            return loss
        return wrapped

    monkeypatch.setattr(loop, "make_criterion", recording_criterion)
    n, b, k, epochs = 46, 4, 3, 2
    dataset = make_dataset(n, 10)
    result, rep, _ = run_fit(dataset, hp(epochs=epochs, batch_size=b, log_every=k, lr=0.1))

    per_epoch = math.ceil(n / b)  # 12
    assert len(recorded) == per_epoch * epochs
    losses = [float(loss) for loss, _, _ in recorded]
    assert len(set(losses)) > 1  # the check below would be vacuous on a constant loss
    for p in rep.named("loss"):
        end = (p.epoch - 1) * per_epoch + p.batch
        window = losses[end - k:end]
        assert p.value == pytest.approx(sum(window) / k, rel=1e-5)

    for epoch in range(1, epochs + 1):
        batch_records = recorded[(epoch - 1) * per_epoch:epoch * per_epoch]
        weighted = sum(float(loss) * len(labels) for loss, _, labels in batch_records)
        correct = sum(int((out.argmax(1) == labels).sum()) for _, out, labels in batch_records)
        train_loss = next(p for p in rep.named("train_loss") if p.epoch == epoch)
        train_acc = next(p for p in rep.named("train_accuracy") if p.epoch == epoch)
        assert train_loss.value == pytest.approx(weighted / n, rel=1e-5)
        assert train_acc.value == pytest.approx(correct / n)
    assert result.final_metrics["train_loss"] == rep.named("train_loss")[-1].value


def _count_items(monkeypatch, n: int, log_every: int, epochs: int) -> tuple[int, int, int]:
    dataset = make_dataset(n, 8)
    calls = [0]
    original = torch.Tensor.item

    def counting_item(self):
        calls[0] += 1
        return original(self)

    # SGD: torch's own single-tensor Adam reads its step counter with .item() every step.
    params = hp(epochs=epochs, batch_size=2, log_every=log_every, optimizer="sgd")
    torch.manual_seed(0)
    model = tiny_model(dataset)
    rep = RecordingReporter()
    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    try:
        result = fit(model, dataset, params, CPU, RunControl(rep, check_every_s=NEVER))
    finally:
        monkeypatch.undo()
    return calls[0], len(rep.named("loss")), result.step


def test_no_host_sync_per_batch(monkeypatch):
    small, small_points, small_batches = _count_items(monkeypatch, 200, 25, 2)
    large, large_points, large_batches = _count_items(monkeypatch, 400, 50, 2)
    assert (small_points, small_batches) == (8, 200)
    assert (large_points, large_batches) == (8, 400)
    # one .item() per log point plus a handful per epoch (epoch loss/accuracy, evaluation)
    assert small_points <= small <= small_points + 6 * 2
    # twice the batches, the same log points and epochs: the same number of syncs
    assert large == small


# ---- train() / eval() and no_grad -----------------------------------------------------------

class ModeRecorder(nn.Module):
    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.fc(x.flatten(1))


def test_model_trains_in_train_mode_and_evaluates_in_eval_mode_under_no_grad():
    dataset = make_dataset(30, 300)
    model = ModeRecorder(16, 3)
    run_fit(dataset, hp(epochs=2, batch_size=4, validation_fraction=0.2), model=model)
    # 24 train samples = 6 batches; test 300 at batch max(4, 256) = 2 batches; val 6 = 1 batch
    one_epoch = [(True, True)] * 6 + [(False, False)] * 2 + [(False, False)] * 1
    assert model.calls == one_epoch * 2  # train() again after the first epoch's evaluation


def test_evaluate_switches_to_eval_and_computes_loss_and_accuracy():
    dataset = make_dataset(10, 300, num_classes=3)
    model = ModeRecorder(16, 3)
    model.train()
    mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std).view(1, -1, 1, 1)
    loss, acc = evaluate(model, dataset.test, mean, std, nn.CrossEntropyLoss(), 4)
    assert not model.training
    assert model.calls == [(False, False), (False, False)]
    with torch.no_grad():
        logits = model(normalise(dataset.test, dataset))
    assert loss == pytest.approx(F.cross_entropy(logits, dataset.test.labels).item(), rel=1e-5)
    assert acc == pytest.approx((logits.argmax(1) == dataset.test.labels).double().mean().item())


# ---- determinism ----------------------------------------------------------------------------

def _trace(seed: int):
    dataset = make_dataset(60, 20)
    result, rep, _ = run_fit(dataset, hp(epochs=2, batch_size=4, log_every=2, seed=seed,
                                         lr=0.05, validation_fraction=0.1))
    points = [(p.name, p.epoch, p.batch, p.step, p.value) for p in rep.points
              if p.name != "samples_per_second"]  # throughput is wall-clock, not data
    final = {k: v for k, v in result.final_metrics.items() if k != "samples_per_second"}
    return points, final


def test_same_seed_gives_identical_runs_and_another_seed_differs():
    first, second, other = _trace(7), _trace(7), _trace(8)
    assert first == second
    loss_values = lambda trace: [p[4] for p in trace[0] if p[0] == "loss"]  # noqa: E731
    assert len(loss_values(first)) == 2 * 7  # 54 train samples: 14 batches, 7 points each
    assert loss_values(first) != loss_values(other)
    assert first[1] != other[1]


def test_shuffle_order_comes_from_the_seed_alone():
    """Same initial weights, different hp.seed: only the data order differs, and it shows."""
    dataset = make_dataset(60, 20)

    def losses(seed: int, rng_noise: int | None = None) -> list[float]:
        torch.manual_seed(0)
        model = tiny_model(dataset)
        if rng_noise is not None:
            torch.manual_seed(rng_noise)  # the global RNG must not pick the order
        rep = RecordingReporter()
        fit(model, dataset, hp(epochs=2, batch_size=4, log_every=1, seed=seed, lr=0.05), CPU,
            RunControl(rep, check_every_s=NEVER))
        return [p.value for p in rep.named("loss")]

    assert losses(1) == losses(1, rng_noise=123)
    assert losses(1) != losses(2)


# ---- optimizers, losses, schedulers --------------------------------------------------------

OPTIMIZERS = {
    "sgd_momentum": dict(optimizer="sgd", momentum=0.9),
    "sgd_nesterov": dict(optimizer="sgd", momentum=0.9, nesterov=True),
    "adam": dict(optimizer="adam"),
    "adamw": dict(optimizer="adamw", weight_decay=0.01),
}


@pytest.mark.parametrize("scheduler", ["none", "step", "cosine", "onecycle"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_every_optimizer_loss_and_scheduler_trains(opt, loss, scheduler):
    dataset = make_dataset(24, 10)
    torch.manual_seed(0)
    model = tiny_model(dataset)
    before = [p.detach().clone() for p in model.parameters()]
    params = hp(epochs=3, batch_size=4, log_every=2, lr=0.01, loss=loss, scheduler=scheduler,
                **OPTIMIZERS[opt])
    result, rep, model = run_fit(dataset, params, model=model)
    assert not result.stopped and result.epochs_completed == 3 and result.step == 18
    assert len(rep.named("loss")) == 9
    assert all(math.isfinite(p.value) for p in rep.points)
    assert set(result.final_metrics) == EPOCH_METRICS
    assert all(math.isfinite(v) for v in result.final_metrics.values())
    assert 0 <= result.final_metrics["eval_accuracy"] <= 1
    assert 0 <= result.final_metrics["train_accuracy"] <= 1
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))


def test_make_optimizer_passes_the_hyperparameters():
    model = nn.Linear(2, 2)
    sgd = make_optimizer(model, hp(optimizer="sgd", lr=0.5, momentum=0.8, nesterov=True,
                                   weight_decay=0.01))
    assert type(sgd) is torch.optim.SGD
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == \
        (0.5, 0.8, True, 0.01)
    adam = make_optimizer(model, hp(optimizer="adam", lr=0.002, weight_decay=0.1))
    assert type(adam) is torch.optim.Adam
    assert (adam.param_groups[0]["lr"], adam.param_groups[0]["weight_decay"]) == (0.002, 0.1)
    adamw = make_optimizer(model, hp(optimizer="adamw", lr=0.003, weight_decay=0.2))
    assert type(adamw) is torch.optim.AdamW
    assert (adamw.param_groups[0]["lr"], adamw.param_groups[0]["weight_decay"]) == (0.003, 0.2)
    # One fused kernel for all parameters on a CPU (or GPU), not a Python loop over them.
    assert all(opt.param_groups[0]["fused"] for opt in (sgd, adam, adamw))


def test_fused_sgd_trains_like_the_per_parameter_loop():
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    results = []
    for fused in (True, False):
        torch.manual_seed(1)
        model = nn.Linear(5, 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=fused)
        for _ in range(20):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        results.append(model.weight.detach().clone())
    assert torch.allclose(results[0], results[1], atol=1e-6)


def test_mse_compares_outputs_with_one_hot_targets():
    outputs = torch.tensor([[0.2, 0.7, 0.1], [1.0, -1.0, 0.5]])
    labels = torch.tensor([1, 0])
    one_hot = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert make_criterion("mse", 3)(outputs, labels).item() == pytest.approx(
        ((outputs - one_hot) ** 2).mean().item())
    assert make_criterion("cross_entropy", 3)(outputs, labels).item() == pytest.approx(
        F.cross_entropy(outputs, labels).item())


def _lrs(scheduler: str, epochs: int, lr: float = 0.1, n: int = 20, b: int = 4,
         **extra) -> list[float]:
    dataset = make_dataset(n, 8)
    _, rep, _ = run_fit(dataset, hp(epochs=epochs, batch_size=b, lr=lr, scheduler=scheduler,
                                    log_every=100, **extra))
    points = rep.named("lr")
    assert [p.epoch for p in points] == list(range(1, epochs + 1))
    return [p.value for p in points]


def test_lr_metric_without_a_scheduler_is_constant():
    assert _lrs("none", 3) == [0.1, 0.1, 0.1]


@pytest.mark.parametrize("epochs, expected", [
    (3, [0.1, 0.01, 0.001]),                           # step_size 1
    (6, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]),         # step_size epochs // 3 = 2
    (2, [0.1, 0.01]),                                  # step_size at least 1
])
def test_step_scheduler_drops_lr_tenfold_every_third_of_the_epochs(epochs, expected):
    assert _lrs("step", epochs) == pytest.approx(expected)


def test_cosine_scheduler_anneals_over_the_epochs():
    expected = [0.1 * (1 + math.cos(math.pi * (e - 1) / 4)) / 2 for e in range(1, 5)]
    assert _lrs("cosine", 4) == pytest.approx(expected)


def test_onecycle_steps_per_batch_and_ends_near_zero():
    lr, epochs, per_epoch = 0.1, 4, 20  # 80 samples at batch 4
    got = _lrs("onecycle", epochs, lr=lr, n=80, optimizer="adam")
    reference_opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=lr)
    reference = torch.optim.lr_scheduler.OneCycleLR(reference_opt, max_lr=lr,
                                                    total_steps=epochs * per_epoch)
    expected = []
    for _ in range(epochs):
        for _ in range(per_epoch):
            used = reference_opt.param_groups[0]["lr"]  # the rate this batch trains with
            reference_opt.step()
            reference.step()
        expected.append(used)
    assert got == pytest.approx(expected)
    # the rate the very last mini-batch used: the schedule's end, ~lr / 25 / 1e4
    assert got[-1] < lr * 1e-3
    assert max(got) <= lr and got[1] > got[-1] and got[0] > lr / 25  # up from lr/25, then down


def test_make_scheduler_kinds():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    assert make_scheduler(opt, hp(scheduler="none"), 10) == (None, False)
    step, per_batch = make_scheduler(opt, hp(scheduler="step", epochs=9), 10)
    assert isinstance(step, torch.optim.lr_scheduler.StepLR) and not per_batch
    assert step.step_size == 3 and step.gamma == pytest.approx(0.1)
    cos, per_batch = make_scheduler(opt, hp(scheduler="cosine", epochs=9), 10)
    assert isinstance(cos, torch.optim.lr_scheduler.CosineAnnealingLR) and not per_batch
    assert cos.T_max == 9
    one, per_batch = make_scheduler(opt, hp(scheduler="onecycle", epochs=9), 10)
    assert isinstance(one, torch.optim.lr_scheduler.OneCycleLR) and per_batch
    assert one.total_steps == 10


# ---- cancellation ---------------------------------------------------------------------------

def test_should_stop_after_the_first_log_point_stops_fit_early():
    dataset = make_dataset(40, 8)  # 10 batches per epoch
    rep = RecordingReporter(stop_when=lambda points: any(p.name == "loss" for p in points))
    result, rep, _ = run_fit(dataset, hp(epochs=3, batch_size=4, log_every=3), reporter=rep)
    assert result.stopped
    assert result.epochs_completed == 0
    assert result.step == 3
    assert result.final_metrics == {}
    assert [p.name for p in rep.points] == ["loss"]
    assert rep.stop_checks == [1]
    assert rep.progress_calls == [(0, 0, 30), (1, 3, 30)]


def test_should_stop_in_a_later_epoch_keeps_the_finished_epochs_metrics():
    dataset = make_dataset(40, 8)  # 10 batches per epoch
    rep = RecordingReporter(stop_when=lambda points: any(p.name == "lr" for p in points))
    result, rep, _ = run_fit(dataset, hp(epochs=3, batch_size=4, log_every=4), reporter=rep)
    assert result.stopped
    assert result.epochs_completed == 1
    assert result.step == 10 + 4
    assert set(result.final_metrics) == EPOCH_METRICS
    assert result.final_metrics == {p.name: p.value for p in rep.points
                                    if p.name != "loss" and p.epoch == 1}
    assert [(p.epoch, p.batch) for p in rep.named("loss")] == [(1, 4), (1, 8), (2, 4)]
    assert rep.progress_calls[-1] == (2, 14, 30)


def test_should_stop_is_consulted_at_every_log_point():
    dataset = make_dataset(40, 8)  # 10 batches per epoch
    rep = RecordingReporter()
    result, rep, _ = run_fit(dataset, hp(epochs=2, batch_size=4, log_every=3), reporter=rep)
    assert not result.stopped
    loss_positions = [i + 1 for i, p in enumerate(rep.points) if p.name == "loss"]
    assert len(loss_positions) == 6
    assert rep.stop_checks == loss_positions  # right after each loss point arrives


def test_should_stop_is_consulted_by_time_between_log_points():
    dataset = make_dataset(40, 8)
    rep = RecordingReporter(stop_when=lambda points: False)
    # log_every larger than an epoch: no log points (only each epoch's end point);
    # check_every_s=0: check every batch
    result, rep, _ = run_fit(dataset, hp(epochs=2, batch_size=4, log_every=1000),
                             reporter=rep, check_every_s=0.0)
    assert [(p.batch, p.step) for p in rep.named("loss")] == [(10, 10), (10, 20)]
    assert len(rep.stop_checks) == result.step == 20
    stopping = RecordingReporter(stop_when=lambda points: True)
    result, _, _ = run_fit(dataset, hp(epochs=2, batch_size=4, log_every=1000),
                           reporter=stopping, check_every_s=0.0)
    assert result.stopped and result.step == 1 and result.epochs_completed == 0


# ---- devices --------------------------------------------------------------------------------

def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto") == CPU
    with pytest.raises(RuntimeError, match="cuda"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")


# ---- the real thing: lenet on digits ---------------------------------------------------------

def test_lenet_learns_digits(tmp_path):
    dataset = load_dataset("digits", tmp_path / "datasets", tmp_path / "cache",
                           allow_download=False)
    params = hp(optimizer="adam", lr=0.001, batch_size=4, epochs=3, log_every=100, seed=0)
    torch.manual_seed(params.seed)
    model = models.build("lenet", dataset.shape, len(dataset.classes))
    rep = RecordingReporter()
    result = fit(model, dataset, params, CPU, RunControl(rep, check_every_s=NEVER))
    assert not result.stopped and result.epochs_completed == 3
    assert result.step == 3 * 360  # 1437 samples at batch 4
    loss = rep.named("loss")
    assert [(p.epoch, p.batch) for p in loss] == [(e, b) for e in (1, 2, 3)
                                                  for b in (100, 200, 300)]
    assert loss[-1].value < loss[0].value
    assert result.final_metrics["eval_accuracy"] >= 0.90
    assert result.final_metrics["train_accuracy"] >= 0.85


@pytest.mark.parametrize("optimizer, key, value", [("sgd", "momentum", 0.0),
                                                   ("sgd", "momentum", 0.5),
                                                   ("adam", "betas", (0.9, 0.999))])
def test_onecycle_keeps_the_momentum_the_job_asked_for(optimizer, key, value):
    from core.jobspec import Hyperparameters

    params = dict(optimizer=optimizer, scheduler="onecycle", lr=0.1, epochs=2)
    if key == "momentum":
        params["momentum"] = value
    hp = Hyperparameters(**params)
    opt = make_optimizer(nn.Linear(2, 2), hp)
    sched, per_batch = make_scheduler(opt, hp, total_steps=10)
    assert per_batch
    for _ in range(10):
        opt.step()
        sched.step()
        assert opt.param_groups[0][key] == value


def test_the_readme_default_job_on_digits_draws_a_loss_curve(tmp_path):
    """{"model": "lenet", "dataset": "digits"}: 360 mini-batches an epoch against the
    tutorial's log_every 2000, so each epoch ends with the mean of its 360 as its point."""
    dataset = load_dataset("digits", tmp_path / "datasets", tmp_path / "cache",
                           allow_download=False)
    params = Hyperparameters()  # the tutorial's defaults: 2 epochs, batch 4, log_every 2000
    torch.manual_seed(params.seed)
    rep = RecordingReporter()
    fit(models.build("lenet", dataset.shape, len(dataset.classes)), dataset, params, CPU,
        RunControl(rep, check_every_s=NEVER))
    loss = rep.named("loss")
    assert [(p.epoch, p.batch, p.step) for p in loss] == [(1, 360, 360), (2, 360, 720)]
    assert loss[1].value < loss[0].value
