"""The training state a run can stop and resume from: weights, optimizer, scheduler, RNGs,
where it is (epoch, step, the position inside the epoch's shuffle) and what it has summed.

Saved as plain types and tensors inside a checkpoint (core/checkpoint_format.py), so a resumed
run continues bit for bit where the first one stopped (on a CPU, with the same threads).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

STATE_VERSION = 1


@dataclass
class TrainState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # an LRScheduler or None
    scheduler_per_batch: bool
    generator: torch.Generator  # the shuffle order, on the CPU
    epoch: int = 1  # the epoch in progress (1-based)
    batch: int = 0  # mini-batches of it done
    step: int = 0  # mini-batches done in all
    order: torch.Tensor | None = None  # this epoch's shuffle, drawn at its first batch
    running_loss: torch.Tensor | None = None  # loss summed since the last log point
    epoch_loss: torch.Tensor | None = None  # loss x batch size summed over the epoch
    correct: torch.Tensor | None = None
    seen: int = 0
    lr_used: float = 0.0
    epoch_seconds: float = 0.0  # training time of this epoch so far (samples/s)
    elapsed_seconds: float = 0.0  # the job's time in fit, over all its attempts
    final_metrics: dict[str, float] = field(default_factory=dict)
    scaler: Any = None  # amp fp16's torch.amp.GradScaler, else None
    augment_generator: torch.Generator | None = None  # augmentation draws, on the device

    def start_accumulators(self, device: torch.device) -> None:
        """Zeroed sums on the device: adding to them needs no host sync."""
        self.running_loss = torch.zeros((), device=device)
        self.epoch_loss = torch.zeros((), device=device, dtype=torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)
        self.seen, self.epoch_seconds = 0, 0.0

    def state_dict(self) -> dict:
        """Everything but the model weights (the checkpoint holds those as model_state)."""
        rng = {"torch": torch.get_rng_state(), "shuffle": self.generator.get_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "version": STATE_VERSION,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": rng,
            "epoch": self.epoch, "batch": self.batch, "step": self.step,
            "order": self.order.cpu() if self.order is not None else None,
            "running_loss": _cpu(self.running_loss), "epoch_loss": _cpu(self.epoch_loss),
            "correct": _cpu(self.correct), "seen": self.seen, "lr_used": self.lr_used,
            "epoch_seconds": self.epoch_seconds, "elapsed_seconds": self.elapsed_seconds,
            "final_metrics": dict(self.final_metrics),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "augment": (self.augment_generator.get_state()
                        if self.augment_generator is not None else None),
        }

    def load_state_dict(self, blob: dict, device: torch.device) -> None:
        """Continue from a saved state; the model's weights are loaded by the caller."""
        self.optimizer.load_state_dict(blob["optimizer"])
        if self.scheduler is not None and blob["scheduler"] is not None:
            self.scheduler.load_state_dict(blob["scheduler"])
        torch.set_rng_state(blob["rng"]["torch"])
        self.generator.set_state(blob["rng"]["shuffle"])
        if "cuda" in blob["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(blob["rng"]["cuda"])
        self.epoch, self.batch, self.step = blob["epoch"], blob["batch"], blob["step"]
        self.order = blob["order"]
        self.start_accumulators(device)
        for name in ("running_loss", "epoch_loss", "correct"):
            if blob[name] is not None:
                getattr(self, name).copy_(blob[name])
        self.seen, self.lr_used = blob["seen"], blob["lr_used"]
        self.epoch_seconds = blob["epoch_seconds"]
        self.elapsed_seconds = blob["elapsed_seconds"]
        self.final_metrics = dict(blob["final_metrics"])
        # Absent from states saved before amp and augment existed: those start afresh.
        if self.scaler is not None and blob.get("scaler"):
            self.scaler.load_state_dict(blob["scaler"])
        if self.augment_generator is not None and blob.get("augment") is not None:
            self.augment_generator.set_state(blob["augment"])


def _cpu(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return tensor.detach().cpu() if tensor is not None else None


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
