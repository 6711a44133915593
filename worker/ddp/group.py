"""What the training loop knows of DDP: this process's place in the group (rank, world size,
device) and the few collectives it calls. fit() takes one of these, or None for a
single-process job, which then runs exactly the code it always ran.

Collectives happen only where every rank gets to at the same step, so none waits forever:
 - every mini-batch: DDP's gradient all-reduce inside backward();
 - log points (`batch % log_every == 0`): the running loss, averaged over the ranks;
 - epoch ends: the epoch's sums, rank 0's buffers, and the evaluation's sums (each rank
   evaluates its share);
 - sync steps: rank 0's verdict (stop? checkpoint now?) broadcast to all. Their cadence is
   set by rank 0 and sent along with each verdict (about SYNC_TARGET_S of training apart),
   so a stop is agreed within a fraction of a second. The message is a CPU tensor (on a
   gloo group beside NCCL on GPUs): it never waits for the GPU.
"""
from __future__ import annotations

import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from core.tensor_datasets import Split
from worker.data import shard_order
from worker.state import TrainState

SYNC_TARGET_S = 0.25
MAX_SYNC_INTERVAL = 1000  # steps
# How long a collective waits for a rank that does not come (a hung one; a crashed one is
# noticed at once: its connections close). Long enough for rank 0 to write an epoch
# checkpoint while the others wait in the next epoch's first all-reduce.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
STOPPED_BY_RANK_0 = "stopped by rank 0"  # the stop reason helper ranks see


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


class Distributed:
    """One rank's view of the process group (joined by join(), left by leave())."""

    def __init__(self, rank: int, world_size: int, device: torch.device, control=None):
        self.rank, self.world_size, self.device = rank, world_size, device
        self.control = control  # the group for verdicts: None is the default (gloo) group
        self.next_sync = 0  # the step of the next verdict; the first step of an attempt
        self._last_sync = (0, 0.0)  # (step, time) of the previous verdict, on rank 0
        self._wanted: str | None = None  # rank 0's stop reason, held until a sync step
        self._save_wanted = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model for training: DDP broadcasts rank 0's weights and buffers now, and
        all-reduces (averages) the gradients in every backward()."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        return shard_order(order, self.rank, self.world_size)

    def eval_part(self, split: Split) -> Split:
        """This rank's share of an evaluation split (views, no copy)."""
        step = self.world_size
        return Split(split.images[self.rank::step], split.labels[self.rank::step])

    def add_up(self, *values: torch.Tensor | int | float) -> torch.Tensor:
        """Each value summed over the ranks, in one all-reduce (as float64: exact for the
        counts a job reaches)."""
        packed = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device)
                              for v in values])
        dist.all_reduce(packed)
        return packed

    def share_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm's running statistics) to every rank before an
        evaluation: DDP hands them out before each training forward, which each rank then
        updates with its own share, so after the epoch's last step they differ a little."""
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def average(self, value: torch.Tensor) -> None:
        """In place: the mean of value over the ranks."""
        dist.all_reduce(value)
        value /= self.world_size

    def merge_sums(self, state: TrainState) -> None:
        """Every rank's running sums go to rank 0 and the others start again from zero, so
        rank 0's state (what a checkpoint saves) holds the whole group's: a resumed run's
        helper ranks start from zero and no rank's share is counted twice or lost."""
        total = self.add_up(state.running_loss, state.epoch_loss, state.correct, state.seen)
        if self.is_main:
            state.running_loss.copy_(total[0])
            state.epoch_loss.copy_(total[1])
            state.correct.copy_(total[2])
            state.seen = int(total[3].item())
        else:
            state.start_accumulators(self.device)

    def agree(self, step: int, wanted: str | None, save_wanted: bool,
              force: bool = False) -> tuple[str | None, bool]:
        """(stop reason, checkpoint now?) as rank 0 decided, the same on every rank: at sync
        steps, and whenever every rank asks with force (an epoch's end); (None, False)
        between them, while rank 0's wishes wait for the next one."""
        self._wanted = self._wanted or wanted
        self._save_wanted = self._save_wanted or save_wanted
        if step < self.next_sync and not force:
            return None, False
        verdict = torch.zeros(3, dtype=torch.int64)
        if self.is_main:
            verdict[0], verdict[1] = self._wanted is not None, self._save_wanted
            verdict[2] = self._interval(step)
        dist.broadcast(verdict, src=0, group=self.control)
        stop, save, interval = (int(v) for v in verdict)
        reason = (self._wanted if self.is_main else STOPPED_BY_RANK_0) if stop else None
        self._wanted, self._save_wanted = None, False
        self.next_sync = step + interval
        return reason, bool(save)

    def _interval(self, step: int) -> int:
        """Steps to the next sync: about SYNC_TARGET_S at the pace since the last one."""
        now = time.monotonic()
        last_step, last_time = self._last_sync
        self._last_sync = (step, now)
        if step <= last_step or last_time == 0.0:
            return 1
        per_step = (now - last_time) / (step - last_step)
        return max(1, min(MAX_SYNC_INTERVAL, int(SYNC_TARGET_S / max(per_step, 1e-6))))


def join(rank: int, world_size: int, device: torch.device, store) -> Distributed:
    """Join the job's process group (every rank calls this, rank 0 holding the store)."""
    backend = backend_for(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                            timeout=COLLECTIVE_TIMEOUT)
    # Verdicts are tiny CPU tensors: under NCCL they go over gloo, never through the GPU.
    control = dist.new_group(backend="gloo") if backend == "nccl" else None
    return Distributed(rank, world_size, device, control)


def leave() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
