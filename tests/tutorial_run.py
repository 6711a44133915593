"""The PyTorch CIFAR-10 tutorial's job (lenet, 2 epochs, batch 4, SGD lr 0.001 momentum 0.9,
a loss point every 2000 mini-batches, seed 0) trained in-process by worker.loop.fit on the
shared CIFAR-10 archive, for the tests that hold its numbers fixed.

tests/data/tutorial_reference.json holds what it gave before the worker's redesign (each
float as float.hex(), so equality is to the bit), recorded at 518de64 (the old loop) with
PINNED: the kernels' instruction set and thread count fixed, so another CPU (one with
AVX-512, or more cores) computes the same bits. `python -m tests.tutorial_run --record`
writes it again (run_pinned runs it in a process of its own, since the pins take effect
only when torch loads).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

REFERENCE = Path(__file__).with_name("data") / "tutorial_reference.json"
# ATen's vector kernels, oneDNN's convolutions and MKL's BLAS all at AVX2 (MKL_CBWR: MKL's
# conditional bitwise reproducibility), and two threads everywhere.
PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2",
          "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
TUTORIAL_HP = {"epochs": 2, "batch_size": 4, "optimizer": "sgd", "lr": 0.001,
               "momentum": 0.9, "log_every": 2000, "seed": 0}


def cifar10():
    """The archive decoded as an upload is (core.uploads), without the API or a database."""
    from core.tensor_datasets import build_dataset
    from core.uploads.archives import Limits
    from core.uploads.materialize import UploadOptions, materialize
    from tests.procs import shared_dir

    result = materialize(shared_dir() / "datasets" / "cifar10-jpg.tar.gz", UploadOptions(), Limits(250_000, 4 * 1024**3, 16_000_000))
    return build_dataset("cifar10", result.classes, result.train, result.test)


def run() -> dict:
    """{"loss": [(epoch, batch, step, value hex)...], "epochs": [{metric: value hex}...]}"""
    import torch

    import models
    from core.jobspec import Hyperparameters
    from worker.control import RunControl
    from worker.loop import fit
    from worker.reporting import NullReporter

    dataset = cifar10()
    hp = Hyperparameters(**TUTORIAL_HP)
    torch.manual_seed(hp.seed)
    model = models.build("lenet", dataset.shape, len(dataset.classes))
    reporter = NullReporter()
    fit(model, dataset, hp, torch.device("cpu"), RunControl(reporter))
    loss = [[p.epoch, p.batch, p.step, float(p.value).hex()]
            for p in reporter.points if p.name == "loss"]
    epochs: dict[int, dict[str, str]] = {}
    for p in reporter.points:
        if p.name in ("train_loss", "train_accuracy", "eval_loss", "eval_accuracy"):
            epochs.setdefault(p.epoch, {})[p.name] = float(p.value).hex()
    return {"loss": loss, "epochs": [epochs[e] for e in sorted(epochs)]}


def run_pinned() -> dict:
    """run() in a new process with PINNED in its environment."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "tests.tutorial_run", "--json"],
                          cwd=Path(__file__).parent.parent, env={**os.environ, **PINNED},
                          capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--record", action="store_true", help="rewrite the reference file")
    parser.add_argument("--json", action="store_true", help="print run()'s values, one line")
    args = parser.parse_args()
    if args.json:
        print(json.dumps(run()))
        raise SystemExit(0)
    values = run_pinned()
    text = "\n".join(['{"loss": [', ",\n".join("  " + json.dumps(p) for p in values["loss"]),
                      ' ], "epochs": [', ",\n".join("  " + json.dumps(e) for e in values["epochs"]),
                      " ]}"])
    if args.record:
        REFERENCE.write_text(text + "\n")
    print(text)
