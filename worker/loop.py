"""The tutorial's epoch loop as plain functions: train one epoch, evaluate, fit. What happens
between steps and at each epoch's end is RunControl's (worker.control); points go out
through its Reporter. No I/O here."""
from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

import torch
from torch import nn

from core.epochs import num_batches
from core.tensor_datasets import ImageDataset, Split
from models import freeze_backbone, min_train_batch, set_image_size, set_mode
from worker.accel import Accel
from worker.control import RunControl
from worker.data import batches, complete_last_batch, split_validation
from worker.feed import place
from worker.recipe import make_criterion, new_state
from worker.reporting import Metric
from worker.state import EpochEnd, TrainState
from worker.tuning import CpuPlan, cpu_kernels, cpu_plan

if TYPE_CHECKING:
    from worker.ddp.group import Distributed

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    epochs_completed: int
    step: int
    stopped: bool
    final_metrics: dict[str, float] = field(default_factory=dict)
    # Why it stopped early: "cancel" (should_stop said so), or the StopFlag's reason.
    stop_reason: str | None = None
    state: TrainState | None = field(default=None, compare=False, repr=False)


def train_one_epoch(state: TrainState, batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
                    criterion, hp, control: RunControl,
                    accel: Accel) -> tuple[dict[str, float], str | None]:
    """The rest of state.epoch's pass (`batches`, from mini-batch state.batch + 1 on, ready
    for the forward); returns (epoch metrics, why it stopped early or None).

    accel (worker.accel, made by fit) carries the net trained (the model, its DDP wrapper,
    or their compiled forward), autocast and the GradScaler (state.scaler). Under DDP each
    rank trains on its share of each global batch and the running loss is averaged over
    the ranks at log points."""
    optimizer, scaler, dist = state.optimizer, state.scaler, control.dist
    batch_scheduler = state.scheduler if state.scheduler_per_batch else None
    set_mode(accel.net, training=True)
    control.start_epoch()
    reason = None

    def forward_backward(inputs: torch.Tensor, labels: torch.Tensor):
        with accel.autocast():
            outputs = accel.forward(inputs)
            loss = criterion(outputs, labels)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        return outputs, loss

    for batch, (inputs, labels) in enumerate(batches, start=state.batch + 1):
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
            _log_loss(state, hp.log_every, control)
        reason = control.after_step(state)
        if reason is not None:
            break
    control.stop_clock(state)
    if reason is not None:
        return {}, reason
    if 0 < state.batch < hp.log_every:  # an epoch shorter than log_every: its one point
        _log_loss(state, state.batch, control, f"the mean of the epoch's {state.batch} "
                                               "mini-batches, fewer than log_every")
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


def _log_loss(state: TrainState, batches: int, control: RunControl, note: str = "") -> None:
    """The tutorial's `[epoch, batch] loss: x` line and point: the mean loss of the last
    `batches` mini-batches (averaged over the ranks under DDP)."""
    if control.dist is not None:
        control.dist.average(state.running_loss)
    value = (state.running_loss / batches).item()  # the one sync: a log point
    state.running_loss.zero_()
    log.info("[%d, %5d] loss: %.3f%s", state.epoch, state.batch, value,
             f" ({note})" if note else "")
    control.loss_point(state, value, ask_next=not note)


def evaluate(model: nn.Module, split: Split, mean: torch.Tensor, std: torch.Tensor,
             criterion, batch_size: int, dist: Distributed | None = None,
             accel: Accel | None = None) -> tuple[float, float]:
    """(mean loss, accuracy) over split, model in eval() under no_grad. Under DDP each rank
    evaluates its share with the plain model (DDP's wrapper would sync buffers at every
    forward, and the shares' batch counts may differ) and the sums are added up.

    accel: evaluation under the job's autocast and memory format, eager, never augmented."""
    set_mode(model, training=False)
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


def _cpu_plan(model: nn.Module, train: Split, hp, dist: Distributed | None,
                  accel: Accel) -> CpuPlan:
    """The training steps' CPU kernels and threads (worker.tuning), worked out on one
    mini-batch's shape (and memory format) before DDP wraps the model."""
    per_rank = hp.batch_size // (dist.world_size if dist is not None else 1)
    sample = torch.zeros((per_rank, *train.images.shape[1:]), device=accel.device)
    return cpu_plan(model, accel.inputs(sample))


def _epoch_batches(state: TrainState, train: Split, mean: torch.Tensor, std: torch.Tensor,
                   hp, dist: Distributed | None, accel: Accel):
    """The rest of state.epoch's mini-batches, ready for the forward: in the epoch's shuffle
    (drawn at its first batch), this rank's share under DDP, augmented (drawn from
    state.augment_generator) and in the job's memory format."""
    if state.batch == 0:
        state.start_accumulators(mean.device)
        state.order = torch.randperm(len(train), generator=state.generator)
    order, size = state.order, hp.batch_size
    order = complete_last_batch(order, size, min_train_batch(state.model),
                                dist.world_size if dist is not None else 1)
    if dist is not None:
        order, size = dist.shard(order), size // dist.world_size
    for inputs, labels in batches(train, size, mean, std, order=order,
                                  start_batch=state.batch, feed=accel.feed):
        if state.augment_generator is not None:
            inputs = accel.augment(inputs, state.augment_generator)
        yield accel.inputs(inputs), labels


def _use_image_size(model: nn.Module, dataset: ImageDataset, hp) -> None:
    """A torchvision model takes the job's image_size (or its default for the dataset),
    resizing each batch on the device (models.zoo); a built-in takes the images as they are."""
    size = set_image_size(model, dataset.shape, getattr(hp, "image_size", None))
    if size is not None and tuple(size) != tuple(dataset.shape[1:]):
        log.info("images of %dx%d are resized on the device to %dx%d (image_size)",
                 dataset.shape[1], dataset.shape[2], size[0], size[1])


def _freeze(model: nn.Module, hp) -> None:
    """freeze "backbone": the head alone trains (models.zoo.ZooNet.freeze_backbone); done
    before the optimizer is made, on every attempt and every rank."""
    if getattr(hp, "freeze", "none") != "backbone":
        return
    freeze_backbone(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("freeze backbone: training the head's %d of the model's %d parameters; the "
             "BatchNorm statistics stay as they were", trainable,
             sum(p.numel() for p in model.parameters()))


def fit(model: nn.Module, dataset: ImageDataset, hp, device: torch.device,
        control: RunControl | None = None, resume_from: dict | None = None) -> FitResult:
    """Train for hp.epochs, evaluating on test (and validation) after each epoch.

    resume_from (a TrainState.state_dict(), with the model's weights already loaded)
    continues a stopped run where it stopped. control (worker.control) says when to stop
    and save, and takes the points; under DDP (control.dist) this is one rank of the job:
    hp.batch_size is the global batch, and every rank runs fit with the same arguments.

    The dataset is held on the device when it takes at most the control's
    device_dataset_fraction of its free memory, else in host memory and streamed to it a
    block at a time (worker.feed)."""
    control = control if control is not None else RunControl()
    dist = control.dist
    train, val = split_validation(dataset.train, hp.validation_fraction, hp.seed)
    (train, test, val), feed = place([train, dataset.test, val], device,
                                     control.device_dataset_fraction)
    mean = torch.tensor(dataset.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std, device=device).view(1, -1, 1, 1)
    _use_image_size(model, dataset, hp)
    _freeze(model, hp)
    model.to(device)
    if device.type == "cuda":  # convolution algorithms chosen per shape, once: fixed shapes
        torch.backends.cudnn.benchmark = True
    accel = Accel(model, hp, device)
    accel.feed = feed
    accel.prepare_model(model)
    per_epoch = num_batches(len(train), hp.batch_size)
    state = new_state(model, hp, per_epoch * hp.epochs)
    state.scaler = accel.make_scaler()
    state.augment_generator = accel.augment_generator(hp.seed)
    if resume_from is not None:
        state.load_state_dict(resume_from, device)
    criterion = make_criterion(hp.loss, len(dataset.classes))
    cpu = _cpu_plan(model, train, hp, dist, accel)
    if dist is not None:
        accel.use(dist.wrap(model))
        if not dist.is_main:  # rank 0's saved sums are the whole group's (merge_sums)
            state.start_accumulators(device)

    def result(reason: str | None = None) -> FitResult:
        control.finish(state)
        return FitResult(state.epoch - 1, state.step, reason is not None,
                         state.final_metrics, reason, state)

    control.start(state, per_epoch * hp.epochs)
    if control.paused_already(state):
        return result("pause")
    while state.epoch <= hp.epochs:
        epoch = state.epoch
        with cpu_kernels(cpu):
            epoch_metrics, reason = train_one_epoch(
                state, _epoch_batches(state, train, mean, std, hp, dist, accel), criterion,
                hp, control, accel)
        if reason is not None:  # progress was reported at the check that stopped it
            return result(reason)
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
        end = EpochEnd(epoch, state.step, dict(epoch_metrics), model, state.optimizer,
                       state.scheduler, state.generator, state.state_dict())
        log.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4f}" for k, v in epoch_metrics.items()))
        reason = control.end_epoch(state, end, [Metric(name, epoch, per_epoch, state.step, value)
                                               for name, value in epoch_metrics.items()],
                                   last=epoch == hp.epochs)
        if reason is not None:
            return result(reason)
    return result()
