"""The tutorial's epoch loop as plain functions; it reports through a Reporter and knows no I/O."""
from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.datasets import num_batches
from core.imagedata import ImageDataset, Split
from worker.accel import Accel
from worker.data import batches, split_validation
from worker.feed import DEVICE_DATASET_FRACTION, place
from worker.state import TrainState
from worker.tuning import cpu_kernels, use_onednn

if TYPE_CHECKING:
    from worker.distributed import Distributed

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
    # True (or a reason string) stops the loop at its next check; True means "cancel".
    def should_stop(self) -> bool | str: ...


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
    training_state: dict | None = None  # TrainState.state_dict(): what a resume needs


class StopFlag:
    """Set from outside the loop (a signal handler, a heartbeat thread); the loop reads it
    after every mini-batch, which costs one attribute read."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason


@dataclass
class FitResult:
    epochs_completed: int
    step: int
    stopped: bool
    final_metrics: dict[str, float] = field(default_factory=dict)
    # Why it stopped early: "cancel" (should_stop said so), or the StopFlag's reason.
    stop_reason: str | None = None
    state: TrainState | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class CheckpointPolicy:
    """When fit hands its state to `checkpoint` mid-epoch: every N steps and/or T seconds
    (0 turns either off)."""

    every_steps: int = 0
    every_seconds: float = 0.0


# Devices with fused (one kernel for all parameters) SGD/Adam/AdamW steps. On a CPU the
# fused step of LeNet's parameters takes 28 us against 62 us (SGD) and 60 against 192 (Adam)
# for the per-parameter loop: at batch 4 that is a tenth of the step.
FUSED_DEVICES = ("cpu", "cuda")


def make_optimizer(model: nn.Module, hp) -> torch.optim.Optimizer:
    params = list(model.parameters())
    fused = bool(params) and all(p.device.type in FUSED_DEVICES for p in params)
    if hp.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov,
                               weight_decay=hp.weight_decay, fused=fused)
    if hp.optimizer == "adam":
        return torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay, fused=fused)
    if hp.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay, fused=fused)
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


def train_one_epoch(state: TrainState, train: Split, mean: torch.Tensor, std: torch.Tensor,
                    criterion, hp, reporter: Reporter, total_steps: int = 0,
                    check_every_s: float = 2.0, stop: StopFlag | None = None,
                    checkpoint: Callable[[TrainState], None] | None = None,
                    policy: CheckpointPolicy = CheckpointPolicy(),
                    deadline: float | None = None, dist: Distributed | None = None,
                    net: nn.Module | None = None,
                    accel: Accel | None = None) -> tuple[dict[str, float], str | None]:
    """The rest of state.epoch's pass over train; returns (epoch metrics, why it stopped).

    Under DDP (dist) it trains `net` (the DDP wrapper of state.model) on this rank's share
    of each global batch; only rank 0's stop flag, reporter and deadline count, and every
    rank stops at the step dist.agree() names.

    accel (worker.accel, made by fit) carries the options: the compiled forward, autocast
    and the GradScaler (state.scaler), channels_last, and the augmentation of each batch
    (drawn from state.augment_generator)."""
    model, optimizer = (net if net is not None else state.model), state.optimizer
    accel = accel if accel is not None else Accel(model, hp, mean.device)
    scaler, augment = state.scaler, state.augment_generator
    batch_scheduler = state.scheduler if state.scheduler_per_batch else None
    model.train()
    if state.batch == 0:
        state.start_accumulators(mean.device)
        state.order = torch.randperm(len(train), generator=state.generator)
    stop = stop or StopFlag()
    next_check = time.monotonic() + check_every_s
    last_save = time.monotonic()
    started = time.perf_counter()
    reason = wanted = None
    if dist is None:
        source = batches(train, hp.batch_size, mean, std, order=state.order,
                         start_batch=state.batch, feed=accel.feed)
    else:
        source = batches(train, hp.batch_size // dist.world_size, mean, std,
                         order=dist.shard(state.order), start_batch=state.batch,
                         feed=accel.feed)

    def forward_backward(inputs: torch.Tensor, labels: torch.Tensor):
        with accel.autocast():
            outputs = accel.forward(inputs)
            loss = criterion(outputs, labels)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        return outputs, loss

    for batch, (inputs, labels) in enumerate(source, start=state.batch + 1):
        if augment is not None:
            inputs = accel.augment(inputs, augment)
        inputs = accel.inputs(inputs)
        optimizer.zero_grad(set_to_none=True)
        try:
            outputs, loss = forward_backward(inputs, labels)
        except Exception as exc:
            if not accel.compiled:
                raise
            accel.fall_back(exc)  # and this very step again, eagerly
            optimizer.zero_grad(set_to_none=True)
            outputs, loss = forward_backward(inputs, labels)
        state.lr_used = optimizer.param_groups[0]["lr"]  # a Python float: no device sync
        if scaler is not None:  # fused steps take the scale and skip on inf: no sync
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if batch_scheduler is not None:
            batch_scheduler.step()
        state.step, state.batch = state.step + 1, batch
        detached = loss.detach().float()  # the same tensor unless autocast made it lower
        state.running_loss += detached
        state.epoch_loss.add_(detached, alpha=labels.shape[0])  # one op: summed in float64
        state.correct += (outputs.detach().argmax(1) == labels).sum()
        state.seen += labels.shape[0]
        if batch % hp.log_every == 0:
            if dist is not None:
                dist.average(state.running_loss)
            value = (state.running_loss / hp.log_every).item()  # the one sync: a log point
            state.running_loss.zero_()
            log.info("[%d, %5d] loss: %.3f", state.epoch, batch, value)
            reporter.metrics([Metric("loss", state.epoch, batch, state.step, value)])
            next_check = 0.0  # ask about cancellation at every log point
        now = time.monotonic()
        if wanted is None:
            if stop.reason is not None:
                wanted = stop.reason
                reporter.progress(state.epoch, state.step, total_steps)
            elif now >= next_check:
                reporter.progress(state.epoch, state.step, total_steps)
                asked = reporter.should_stop()
                if asked:
                    wanted = asked if isinstance(asked, str) else "cancel"
                elif deadline is not None and now >= deadline:
                    wanted = "timeout"
                next_check = time.monotonic() + check_every_s
        save = checkpoint is not None and bool(
            (policy.every_steps and state.step % policy.every_steps == 0)
            or (policy.every_seconds and now - last_save >= policy.every_seconds))
        if dist is None:
            reason = wanted
        else:  # every rank at the same steps, as rank 0 decided
            reason, save = dist.agree(state.step, wanted, save)
            if reason is not None or save:
                dist.merge_sums(state)  # what rank 0 saves holds every rank's share
            if reason is not None:  # some steps after rank 0 wanted it
                reporter.progress(state.epoch, state.step, total_steps)
        if reason is not None:
            break
        if save and checkpoint is not None:
            state.epoch_seconds += time.perf_counter() - started
            checkpoint(state)
            started = time.perf_counter()
            last_save = time.monotonic()
    state.epoch_seconds += time.perf_counter() - started
    if reason is not None:
        return {}, reason
    if dist is not None:
        dist.merge_sums(state)
    seconds, seen = state.epoch_seconds, state.seen
    epoch_metrics = {
        "train_loss": state.epoch_loss.item() / max(seen, 1),
        "train_accuracy": state.correct.item() / max(seen, 1),
        "samples_per_second": seen / seconds if seconds > 0 else 0.0,
        "lr": state.lr_used,  # what the epoch's last mini-batch was trained with
    }
    return epoch_metrics, None


def evaluate(model: nn.Module, split: Split, mean: torch.Tensor, std: torch.Tensor,
             criterion, batch_size: int, dist: Distributed | None = None,
             accel: Accel | None = None) -> tuple[float, float]:
    """(mean loss, accuracy) over split, model in eval() under no_grad. Under DDP each rank
    evaluates its share with the plain model (DDP's wrapper would sync buffers at every
    forward, and the shares' batch counts may differ) and the sums are added up.

    accel: evaluation under the job's autocast and memory format, eager, never augmented."""
    model.eval()
    autocast = accel.autocast if accel is not None else nullcontext
    device = mean.device  # where the batches are made (the split may be in host memory)
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    with torch.no_grad():
        for inputs, labels in batches(split if dist is None else dist.eval_part(split),
                                      max(batch_size, 256), mean, std,
                                      feed=accel.feed if accel is not None else None):
            if accel is not None:
                inputs = accel.inputs(inputs)
            with autocast():
                outputs = model(inputs)
                loss = criterion(outputs, labels)
            total_loss += loss.double() * labels.shape[0]
            correct += (outputs.argmax(1) == labels).sum()
    if dist is not None:
        total_loss, correct = dist.add_up(total_loss, correct)
    n = max(len(split), 1)
    return total_loss.item() / n, correct.item() / n


def new_state(model: nn.Module, hp, total_steps: int) -> TrainState:
    """A fresh run's state: the optimizer, scheduler and shuffle generator the job asks for."""
    optimizer = make_optimizer(model, hp)
    scheduler, per_batch = make_scheduler(optimizer, hp, total_steps)
    state = TrainState(model, optimizer, scheduler, per_batch,
                       torch.Generator().manual_seed(hp.seed))
    state.lr_used = optimizer.param_groups[0]["lr"]
    return state


def _conv_backend(model: nn.Module, train: Split, hp, dist: Distributed | None,
                  accel: Accel) -> bool:
    """Whether the training steps use oneDNN convolutions (worker.tuning), worked out on one
    mini-batch's shape (and memory format) before DDP wraps the model."""
    per_rank = hp.batch_size // (dist.world_size if dist is not None else 1)
    sample = torch.zeros((per_rank, *train.images.shape[1:]), device=accel.device)
    return use_onednn(model, accel.inputs(sample))


def fit(model: nn.Module, dataset: ImageDataset, hp, device: torch.device,
        reporter: Reporter, check_every_s: float = 2.0,
        on_epoch_end: Callable[[EpochEnd], None] | None = None,
        resume_from: dict | None = None, stop: StopFlag | None = None,
        checkpoint: Callable[[TrainState], None] | None = None,
        policy: CheckpointPolicy = CheckpointPolicy(),
        max_seconds: float | None = None, dist: Distributed | None = None,
        device_dataset_fraction: float = DEVICE_DATASET_FRACTION) -> FitResult:
    """Train for hp.epochs, evaluating on test (and validation) after each epoch.

    resume_from (a TrainState.state_dict(), with the model's weights already loaded)
    continues a stopped run where it stopped. `checkpoint` is handed the state every
    `policy` interval, `stop` is read after every mini-batch, and max_seconds bounds the
    job's time in fit over all its attempts (then it stops with reason "timeout").

    dist (worker.distributed) makes this one rank of a DDP job: hp.batch_size is the global
    batch, and every rank runs fit with the same arguments and resume state.

    The dataset is held on the device when it takes at most device_dataset_fraction of its
    free memory, else in host memory and streamed to it a block at a time (worker.feed)."""
    train, val = split_validation(dataset.train, hp.validation_fraction, hp.seed)
    (train, test, val), feed = place([train, dataset.test, val], device,
                                     device_dataset_fraction)
    mean = torch.tensor(dataset.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std, device=device).view(1, -1, 1, 1)
    model.to(device)
    if device.type == "cuda":  # convolution algorithms chosen per shape, once: fixed shapes
        torch.backends.cudnn.benchmark = True
    accel = Accel(model, hp, device)
    accel.feed = feed
    accel.prepare_model(model)
    per_epoch = num_batches(len(train), hp.batch_size)
    total_steps = per_epoch * hp.epochs
    state = new_state(model, hp, total_steps)
    state.scaler = accel.make_scaler()
    state.augment_generator = accel.augment_generator(hp.seed)
    if resume_from is not None:
        state.load_state_dict(resume_from, device)
    criterion = make_criterion(hp.loss, len(dataset.classes))
    onednn = _conv_backend(model, train, hp, dist, accel)
    net = None
    if dist is not None:
        net = dist.wrap(model)
        accel.use(net)
        if not dist.is_main:  # rank 0's saved sums are the whole group's (merge_sums)
            state.start_accumulators(device)
    attempt_started = time.monotonic()
    deadline = (attempt_started + max_seconds - state.elapsed_seconds
                if max_seconds is not None else None)

    def result(stopped: bool, reason: str | None = None) -> FitResult:
        state.elapsed_seconds += time.monotonic() - attempt_started
        return FitResult(state.epoch - 1, state.step, stopped, state.final_metrics, reason,
                         state)

    reporter.progress(state.epoch - 1, state.step, total_steps)
    while state.epoch <= hp.epochs:
        epoch = state.epoch
        with cpu_kernels(onednn):
            epoch_metrics, reason = train_one_epoch(
                state, train, mean, std, criterion, hp, reporter, total_steps, check_every_s,
                stop, checkpoint, policy, deadline, dist, net, accel)
        if reason is not None:  # progress was reported at the check that stopped it
            return result(True, reason)
        if dist is not None:
            dist.share_buffers(model)
        epoch_metrics["eval_loss"], epoch_metrics["eval_accuracy"] = evaluate(
            model, test, mean, std, criterion, hp.batch_size, dist, accel)
        if val is not None:
            epoch_metrics["val_loss"], epoch_metrics["val_accuracy"] = evaluate(
                model, val, mean, std, criterion, hp.batch_size, dist, accel)
        if state.scheduler is not None and not state.scheduler_per_batch:
            state.scheduler.step()
        # A diverged value stays NaN here; the runner stores it as null.
        state.final_metrics = dict(epoch_metrics)
        state.epoch, state.batch, state.order = epoch + 1, 0, None
        reporter.metrics([Metric(name, epoch, per_epoch, state.step, value)
                          for name, value in epoch_metrics.items()])
        if on_epoch_end is not None:
            on_epoch_end(EpochEnd(epoch, state.step, dict(epoch_metrics), model,
                                  state.optimizer, state.scheduler, state.generator,
                                  state.state_dict()))
        reporter.progress(epoch, state.step, total_steps)
        log.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4f}" for k, v in epoch_metrics.items()))
    return result(False)
