"""What happens between training steps and at each epoch's end, in one place: the stop
flag, asking the reporter whether to stop, the deadline, mid-epoch checkpoints, progress,
and under DDP every rank's agreement on all of it. worker.loop trains; RunControl decides.
It knows no I/O either: the reporter and the checkpoint callables do that."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from core.config import Settings
from worker.reporting import Metric, NullReporter, Reporter
from worker.state import EpochEnd, TrainState

if TYPE_CHECKING:
    from worker.ddp.group import Distributed


class StopFlag:
    """Set from outside the loop (a signal handler, the lease's heartbeat, the reporter's
    cancel poll); the loop reads it after every mini-batch, which costs one attribute read."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason


@dataclass(frozen=True)
class CheckpointPolicy:
    """When a mid-epoch resume state is handed to RunControl.checkpoint: every N steps
    and/or T seconds (0 turns either off)."""

    every_steps: int = 0
    every_seconds: float = 0.0


def progress_epoch(epoch: int, batch: int) -> int:
    """The epoch a job's progress shows, for a state at mini-batch `batch` of `epoch`: that
    one while it is under way, or at an epoch's boundary the last one finished (a run
    resumed mid-epoch shows the epoch it resumes in, not the one before)."""
    return epoch if batch else epoch - 1


# Defaults for a RunControl built without settings (tests, benchmarks, in-process use): the
# settings' own defaults, so each value has one home (core.config).
_CHECK_EVERY_S = Settings.model_fields["cancel_check_seconds"].default
_DEVICE_DATASET_FRACTION = Settings.model_fields["device_dataset_fraction"].default


class RunControl:
    """How the worker steers one run of fit; a script leaves it at its defaults.

    reporter: takes the points and progress, and is asked whether to stop (cancel, a lost
      lease, a database outage) every check_every_s and right after each loss point;
    stop: set by another thread (SIGTERM, the heartbeat, the reporter's cancel poll), read
      after every mini-batch and at each epoch's end;
    checkpoint, policy: the mid-epoch resume state, handed over every policy interval;
    on_epoch_end: each finished epoch (the epoch checkpoint);
    max_seconds: the job's time in fit over all its attempts; then it stops ("timeout"),
      checked after every mini-batch;
    dist: this rank of a DDP job (worker.ddp): every rank stops and saves at the steps
      rank 0 names, with rank 0's reason;
    pause_after_epoch: stop ("pause") at that epoch's end, unless it is the last: an asha
      trial at its rung, to be resumed from there if its sweep promotes it;
    device_dataset_fraction: the most of a CUDA device's free memory the dataset may take
      to be held there (worker.feed)."""

    def __init__(self, reporter: Reporter | None = None, *, check_every_s: float = _CHECK_EVERY_S,
                 stop: StopFlag | None = None,
                 checkpoint: Callable[[TrainState], None] | None = None,
                 policy: CheckpointPolicy = CheckpointPolicy(),
                 on_epoch_end: Callable[[EpochEnd], None] | None = None,
                 max_seconds: float | None = None, dist: Distributed | None = None,
                 device_dataset_fraction: float = _DEVICE_DATASET_FRACTION,
                 pause_after_epoch: int | None = None) -> None:
        self.reporter = reporter if reporter is not None else NullReporter()
        self.check_every_s, self.stop = check_every_s, stop or StopFlag()
        self.checkpoint, self.policy, self.on_epoch_end = checkpoint, policy, on_epoch_end
        self.max_seconds, self.dist = max_seconds, dist
        self.device_dataset_fraction = device_dataset_fraction
        self.pause_after_epoch = pause_after_epoch
        self.total_steps = 0
        self.deadline: float | None = None
        self.next_check = 0.0
        self.wanted: str | None = None  # the stop this rank wants (DDP: not yet agreed)
        self._attempt_started = self._last_save = time.monotonic()
        self._clock = time.perf_counter()

    # ---- the run and its epochs ------------------------------------------------------------

    def start(self, state: TrainState, total_steps: int) -> None:
        """At fit's start: the deadline left of max_seconds, and where the job stands."""
        self.total_steps = total_steps
        self._attempt_started = time.monotonic()
        self.deadline = (self._attempt_started + self.max_seconds - state.elapsed_seconds
                         if self.max_seconds is not None else None)
        self.next_check = self._attempt_started + self.check_every_s
        self.report_progress(state)

    def paused_already(self, state: TrainState) -> bool:
        """A run resumed at the boundary right after its pause epoch (its worker was lost
        between the resume checkpoint and the pause): it pauses again before training."""
        return (self.pause_after_epoch is not None and state.batch == 0
                and state.epoch > self.pause_after_epoch)

    def finish(self, state: TrainState) -> None:
        state.elapsed_seconds += time.monotonic() - self._attempt_started

    def start_epoch(self) -> None:
        """The epoch's training clock (samples/s) starts; checkpoints pause it."""
        self._clock = time.perf_counter()
        self._last_save = time.monotonic()

    def stop_clock(self, state: TrainState) -> None:
        state.epoch_seconds += time.perf_counter() - self._clock

    def report_progress(self, state: TrainState) -> None:
        self.reporter.progress(progress_epoch(state.epoch, state.batch), state.step,
                               self.total_steps)

    def loss_point(self, state: TrainState, value: float, ask_next: bool = True) -> None:
        """A loss point goes out; after a log point's the reporter is asked at once (an
        epoch's end decides by itself)."""
        self.reporter.metrics([Metric("loss", state.epoch, state.batch, state.step, value)])
        if ask_next:
            self.next_check = 0.0

    # ---- decisions -------------------------------------------------------------------------

    def after_step(self, state: TrainState) -> str | None:
        """After every mini-batch: why to stop now (None: go on), having handed over a
        mid-epoch checkpoint when one is due. A clock read and a few comparisons, unless a
        check is due."""
        now = time.monotonic()
        if self.wanted is None:
            self.wanted = self._wish(state, now, ask=True)
        due = self.checkpoint is not None and bool(
            (self.policy.every_steps and state.step % self.policy.every_steps == 0)
            or (self.policy.every_seconds and now - self._last_save >= self.policy.every_seconds))
        reason, due = self._agree(state, due, at_epoch_end=False)
        if reason is None and due:
            self.stop_clock(state)
            self.checkpoint(state)
            self.start_epoch()
        return reason

    def end_epoch(self, state: TrainState, end: EpochEnd, points: Sequence[Metric],
                  last: bool) -> str | None:
        """The epoch's one decision point: its points and checkpoint are handed over, then
        whether to go on (None) or why to stop. After the last epoch there is nothing to
        stop. Only the flag and the deadline count here: the reporter is asked by time
        between steps."""
        self.reporter.metrics(points)
        if self.on_epoch_end is not None:
            self.on_epoch_end(end)
        self.report_progress(state)
        if last:
            return None
        if self.wanted is None:
            self.wanted = self._wish(state, time.monotonic(), ask=False)
        if self.wanted is None and self.pause_after_epoch is not None \
                and end.epoch >= self.pause_after_epoch:
            self.wanted = "pause"
        reason, _ = self._agree(state, False, at_epoch_end=True)
        return reason

    def _wish(self, state: TrainState, now: float, ask: bool) -> str | None:
        if self.stop.reason is not None:
            wish = self.stop.reason
        elif self.deadline is not None and now >= self.deadline:
            wish = "timeout"
        elif ask and now >= self.next_check:
            self.report_progress(state)
            asked = self.reporter.should_stop()
            self.next_check = time.monotonic() + self.check_every_s
            return (asked if isinstance(asked, str) else "cancel") if asked else None
        else:
            return None
        self.report_progress(state)
        return wish

    def _agree(self, state: TrainState, due: bool, at_epoch_end: bool) -> tuple[str | None, bool]:
        """(stop reason, save now?): this process's own, or under DDP rank 0's on every
        rank, at the sync steps it names (and at every epoch's end)."""
        if self.dist is None:
            return self.wanted, due
        reason, due = self.dist.agree(state.step, self.wanted, due, force=at_epoch_end)
        if (reason is not None or due) and not at_epoch_end:
            self.dist.merge_sums(state)  # what rank 0 saves holds every rank's share
        if reason is not None:  # some steps after rank 0 wanted it
            self.report_progress(state)
        return reason, due
