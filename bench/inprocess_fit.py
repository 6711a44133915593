"""A trainhub job's training called in-process: the worker's own functions, no API, no Celery.

P2's baseline (issue #12): what worker/runner.py does for a job, less the service around it
(claim, lease, checkpoints, metric sink, status): Hyperparameters of the job, the seed, the
dataset read as the runner reads it (worker.job_inputs.dataset_source + worker.data.read_dataset
from the artifact store of --data-dir), models.build, then worker.loop.fit with a
NullReporter. Run it against a stopped or running `trainhub up`'s data dir (read only).
Its last line is JSON: {"seconds" (dataset read + build + fit), "fit_seconds", "accuracy",
"loss_points", "device"}.

    .venv/bin/python bench/inprocess_fit.py --data-dir DIR --dataset ID --job '{"model":
        "lenet", "hyperparameters": {"epochs": 2, "batch_size": 4}}'
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from predict_bench import REMOVED_ENV  # noqa: E402 - what `trainhub up` runs without


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="an embedded-mode TRAINHUB_DATA_DIR holding the uploaded dataset")
    parser.add_argument("--dataset", required=True, help="the uploaded dataset's id")
    parser.add_argument("--job", required=True,
                        help='the job as POST /jobs takes it (JSON): model, hyperparameters')
    args = parser.parse_args(argv)
    job = json.loads(args.job)
    # The settings of the `trainhub up` that holds the dataset (embedded mode).
    os.environ["TRAINHUB_DATA_DIR"] = str(args.data_dir)
    for name in REMOVED_ENV:
        os.environ.pop(name, None)

    import torch

    import models
    from core.artifacts import get_store
    from core.config import get_settings
    from core.jobspec import Hyperparameters
    from worker.control import RunControl
    from worker.data import read_dataset
    from worker.job_inputs import dataset_source
    from worker.loop import fit
    from worker.recipe import resolve_device
    from worker.reporting import NullReporter

    started = time.perf_counter()
    hp = Hyperparameters(**job.get("hyperparameters", {}))
    torch.manual_seed(hp.seed)
    dataset = read_dataset(dataset_source(args.dataset), get_settings(), get_store())
    model = models.build(job["model"], dataset.shape, len(dataset.classes))
    device = resolve_device(job.get("device", "auto"))
    reporter = NullReporter()
    fit_started = time.perf_counter()
    result = fit(model, dataset, hp, device, RunControl(reporter))
    finished = time.perf_counter()
    if result.stopped:
        raise SystemExit(f"fit stopped early: {result.stop_reason}")
    print(json.dumps({"seconds": finished - started, "fit_seconds": finished - fit_started,
                      "accuracy": result.final_metrics["eval_accuracy"],
                      "loss_points": sum(p.name == "loss" for p in reporter.points),
                      "device": str(device)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
