"""The tutorial's epoch loop as plain functions; it reports through a Reporter and knows no I/O."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.datasets import num_batches
from core.imagedata import ImageDataset, Split
from worker.data import batches, split_validation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metric:
    name: str
    epoch: int
    batch: int
    step: int
    value: float


class Reporter(Protocol):
    def metrics(self, points: Sequence[Metric]) -> None: ...
    def progress(self, epoch: int, step: int, total_steps: int) -> None: ...
    def should_stop(self) -> bool: ...


class NullReporter:
    """Collects points in memory; for scripts and tests."""

    def __init__(self) -> None:
        self.points: list[Metric] = []

    def metrics(self, points: Sequence[Metric]) -> None:
        self.points.extend(points)

    def progress(self, epoch: int, step: int, total_steps: int) -> None:
        pass

    def should_stop(self) -> bool:
        return False


@dataclass
class EpochEnd:
    """The training state at the end of an epoch, handed to on_epoch_end (checkpointing)."""

    epoch: int
    step: int
    metrics: dict[str, float]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    generator: torch.Generator


@dataclass
class FitResult:
    epochs_completed: int
    step: int
    stopped: bool
    final_metrics: dict[str, float] = field(default_factory=dict)


def make_optimizer(model: nn.Module, hp) -> torch.optim.Optimizer:
    params = model.parameters()
    if hp.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov,
                               weight_decay=hp.weight_decay)
    if hp.optimizer == "adam":
        return torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
    if hp.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
    raise ValueError(f"unknown optimizer {hp.optimizer!r}")


def make_scheduler(optimizer, hp, total_steps: int):
    """Returns (scheduler, steps_per_batch): onecycle steps every batch, the rest every epoch."""
    if hp.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, hp.epochs // 3),
                                               gamma=0.1), False
    if hp.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=hp.epochs), False
    if hp.scheduler == "onecycle":
        # cycle_momentum=False: keep the momentum (or Adam's beta1) the job asked for.
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.lr,
                                                   total_steps=total_steps,
                                                   cycle_momentum=False), True
    return None, False


def make_criterion(loss_name: str, num_classes: int):
    """loss(outputs, labels) -> mean loss; mse compares outputs with one-hot targets."""
    if loss_name == "mse":
        return lambda outputs, labels: F.mse_loss(
            outputs, F.one_hot(labels, num_classes).to(outputs.dtype))
    return nn.CrossEntropyLoss()


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but this worker has no CUDA device")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def train_one_epoch(model: nn.Module, train: Split, mean: torch.Tensor, std: torch.Tensor,
                    optimizer, criterion, epoch: int, step: int, hp, reporter: Reporter,
                    generator: torch.Generator, batch_scheduler=None,
                    check_every_s: float = 2.0,
                    total_steps: int = 0) -> tuple[int, dict[str, float], bool]:
    """One pass over train; returns (global step, epoch metrics, stopped early)."""
    model.train()
    device = train.images.device
    running_loss = torch.zeros((), device=device)  # stays on the device: no per-batch sync
    epoch_loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    lr_used = optimizer.param_groups[0]["lr"]
    next_check = time.monotonic() + check_every_s
    started = time.perf_counter()
    for batch, (inputs, labels) in enumerate(batches(train, hp.batch_size, mean, std,
                                                     generator), start=1):
        optimizer.zero_grad(set_to_none=True)
        outputs = model(inputs)
        loss = criterion(outputs, labels)
        loss.backward()
        lr_used = optimizer.param_groups[0]["lr"]  # a Python float: no device sync
        optimizer.step()
        if batch_scheduler is not None:
            batch_scheduler.step()
        step += 1
        detached = loss.detach()
        running_loss += detached
        epoch_loss += detached.double() * labels.shape[0]
        correct += (outputs.detach().argmax(1) == labels).sum()
        seen += labels.shape[0]
        if batch % hp.log_every == 0:
            value = (running_loss / hp.log_every).item()  # the one sync: at a log point
            running_loss.zero_()
            log.info("[%d, %5d] loss: %.3f", epoch, batch, value)
            reporter.metrics([Metric("loss", epoch, batch, step, value)])
            next_check = 0.0  # ask about cancellation at every log point
        if time.monotonic() >= next_check:
            reporter.progress(epoch, step, total_steps)
            if reporter.should_stop():
                return step, {}, True
            next_check = time.monotonic() + check_every_s
    seconds = time.perf_counter() - started
    epoch_metrics = {
        "train_loss": epoch_loss.item() / max(seen, 1),
        "train_accuracy": correct.item() / max(seen, 1),
        "samples_per_second": seen / seconds if seconds > 0 else 0.0,
        "lr": lr_used,  # what the epoch's last mini-batch was trained with
    }
    return step, epoch_metrics, False


def evaluate(model: nn.Module, split: Split, mean: torch.Tensor, std: torch.Tensor,
             criterion, batch_size: int) -> tuple[float, float]:
    """(mean loss, accuracy) over split, model in eval() under no_grad."""
    model.eval()
    device = split.images.device
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    with torch.no_grad():
        for inputs, labels in batches(split, max(batch_size, 256), mean, std):
            outputs = model(inputs)
            total_loss += criterion(outputs, labels).double() * labels.shape[0]
            correct += (outputs.argmax(1) == labels).sum()
    n = max(len(split), 1)
    return total_loss.item() / n, correct.item() / n


def fit(model: nn.Module, dataset: ImageDataset, hp, device: torch.device,
        reporter: Reporter, check_every_s: float = 2.0,
        on_epoch_end: Callable[[EpochEnd], None] | None = None) -> FitResult:
    """Train for hp.epochs, evaluating on test (and validation) after each epoch."""
    train, val = split_validation(dataset.train, hp.validation_fraction, hp.seed)
    train, test = train.to(device), dataset.test.to(device)
    val = val.to(device) if val is not None else None
    mean = torch.tensor(dataset.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std, device=device).view(1, -1, 1, 1)
    model.to(device)
    optimizer = make_optimizer(model, hp)
    per_epoch = num_batches(len(train), hp.batch_size)
    total_steps = per_epoch * hp.epochs
    scheduler, per_batch = make_scheduler(optimizer, hp, total_steps)
    criterion = make_criterion(hp.loss, len(dataset.classes))
    generator = torch.Generator().manual_seed(hp.seed)  # the shuffle order, on the CPU
    step, final = 0, {}
    reporter.progress(0, 0, total_steps)
    for epoch in range(1, hp.epochs + 1):
        step, epoch_metrics, stopped = train_one_epoch(
            model, train, mean, std, optimizer, criterion, epoch, step, hp, reporter, generator,
            scheduler if per_batch else None, check_every_s, total_steps)
        if stopped:  # progress was reported at the check that stopped it
            return FitResult(epoch - 1, step, True, final)
        epoch_metrics["eval_loss"], epoch_metrics["eval_accuracy"] = evaluate(
            model, test, mean, std, criterion, hp.batch_size)
        if val is not None:
            epoch_metrics["val_loss"], epoch_metrics["val_accuracy"] = evaluate(
                model, val, mean, std, criterion, hp.batch_size)
        if scheduler is not None and not per_batch:
            scheduler.step()
        final = dict(epoch_metrics)  # a diverged value stays NaN; the runner stores it as null
        reporter.metrics([Metric(name, epoch, per_epoch, step, value)
                          for name, value in epoch_metrics.items()])
        if on_epoch_end is not None:
            on_epoch_end(EpochEnd(epoch, step, dict(epoch_metrics), model, optimizer, scheduler,
                                  generator))
        reporter.progress(epoch, step, total_steps)
        log.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4f}" for k, v in epoch_metrics.items()))
    return FitResult(hp.epochs, step, False, final)
