"""A helper rank of a DDP job: `python -m worker.ddp.rank '<json config>'`, started by
worker.ddp.launch for ranks 1..N-1 (rank 0 is the runner itself).

It trains exactly as rank 0 does (same dataset, model, seed and resume state) but writes
nothing: no metric, no checkpoint, no database row. Its log records go to stdout as JSON
lines, which rank 0 stores in the job's log. It ends when fit() ends, when a collective
fails (rank 0 gone), or when its parent process is gone.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from datetime import timedelta

import torch
from torch.distributed import TCPStore

from core import checkpoint_format as ckpt
from core.artifacts import get_store
from core.config import get_settings
from core.jobspec import Hyperparameters
from core.program_models import build_model
from models.pretrained import job_normalization
from worker.checkpointing import training_state_of
from worker.control import RunControl
from worker.data import read_dataset
from worker.ddp.group import join, leave
from worker.ddp.launch import HOST, START_TIMEOUT_S, group_store, ready_key
from worker.loop import fit

log = logging.getLogger("worker.ddp.rank")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return json.dumps({"level": record.levelname, "source": record.name,
                           "message": message})


class SilentReporter:
    """Rank 0 reports for the job; a helper's points are the same (averaged) values."""

    def metrics(self, points) -> None:
        pass

    def progress(self, epoch: int, step: int, total_steps: int) -> None:
        pass

    def should_stop(self) -> bool:
        return False


def _exit_with_parent() -> None:
    """If rank 0's process dies outright (SIGKILL, OOM), go too rather than linger."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def main(config: dict) -> None:
    rank, world_size = config["rank"], config["world_size"]
    device = torch.device(config["device"])
    torch.set_num_threads(config["threads"])
    spec = config["spec"]
    hp = Hyperparameters(**spec["hyperparameters"])
    store = TCPStore(HOST, config["port"], world_size, is_master=False,
                     timeout=timedelta(seconds=START_TIMEOUT_S))
    log.info("started on %s (pid %d, %d thread(s))", device, os.getpid(), config["threads"])
    torch.manual_seed(hp.seed)  # as rank 0 did; DDP hands out rank 0's weights anyway
    settings = get_settings()
    dataset = read_dataset(config["dataset"], settings, get_store())
    # Pretrained weights' normalisation, as rank 0's (worker.job_inputs); DDP hands out
    # rank 0's loaded weights.
    dataset = dataset.normalized_with(job_normalization(spec, dataset.shape[0]))
    model = build_model(get_store(), spec["model"], dataset.shape, len(dataset.classes))
    resume = None
    if config["resume_key"]:  # the file rank 0 resumes from: the same optimizer state
        with get_store().open(config["resume_key"]) as f:
            blob = ckpt.load(f)
        model.load_state_dict(blob["model_state"])
        resume = training_state_of(blob)
    store.set(ready_key(rank), "1")
    group = join(rank, world_size, device, group_store(store))
    try:
        control = RunControl(SilentReporter(), dist=group,
                             device_dataset_fraction=settings.device_dataset_fraction)
        result = fit(model, dataset, hp, device, control, resume_from=resume)
    finally:
        leave()
    log.info("finished at step %d", result.step)


if __name__ == "__main__":
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLines())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.captureWarnings(True)  # torch's warnings too, as records rank 0 can relay
    # Rank 0 logs the loss and epoch lines for the job; the same here would repeat them.
    logging.getLogger("worker.loop").setLevel(logging.WARNING)
    # Rank 0 decides when to stop (a SIGTERM to the whole service reaches it too).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    try:
        main(json.loads(sys.argv[1]))
    except BaseException as exc:
        log.error("failed: %s: %s", type(exc).__name__, str(exc).splitlines()[0][:500]
                  if str(exc) else "", exc_info=True)
        logging.shutdown()
        sys.exit(1)
