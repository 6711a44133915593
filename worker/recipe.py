"""What a job's hyperparameters build for the loop: its device, optimizer, learning-rate
schedule, loss, and the fresh training state they start from."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from worker.state import TrainState

# Devices with fused (one kernel for all parameters) SGD/Adam/AdamW steps. On a CPU the
# fused step of LeNet's parameters takes 28 us against 62 us (SGD) and 60 against 192 (Adam)
# for the per-parameter loop: at batch 4 that is a tenth of the step.
FUSED_DEVICES = ("cpu", "cuda")


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but this worker has no CUDA device")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def make_optimizer(model: nn.Module, hp) -> torch.optim.Optimizer:
    """The job's optimizer over the parameters that train: a frozen one (freeze "backbone")
    is no part of it, so neither a step nor weight decay ever touches it."""
    params = [p for p in model.parameters() if p.requires_grad]
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


def new_state(model: nn.Module, hp, total_steps: int) -> TrainState:
    """A fresh run's state: the optimizer, scheduler and shuffle generator the job asks for."""
    optimizer = make_optimizer(model, hp)
    scheduler, per_batch = make_scheduler(optimizer, hp, total_steps)
    state = TrainState(model, optimizer, scheduler, per_batch,
                       torch.Generator().manual_seed(hp.seed))
    state.lr_used = optimizer.param_groups[0]["lr"]
    return state
