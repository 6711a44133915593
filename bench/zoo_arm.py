"""One arm of bench/zoo_bench.py, in a process of its own: a torchvision model trained on
synthetic CIFAR-10-shaped data in memory (uint8 3x32x32, 10 classes, drawn from --seed) for
--warmup + --steps mini-batches of --batch, on the CPU with --threads intra-op threads.

  --arm trainhub: the job as the worker runs it: models.build("torchvision.<model>"), then
      worker.loop.fit (one epoch, SGD lr 0.001 momentum 0.9, log_every = --warmup) with a
      reporter that keeps the loss points and the time each arrives;
  --arm plain: torchvision.models.get_model(model, num_classes=10) and the plain loop
      `opt.zero_grad(); loss = crit(model(x), y); loss.backward(); opt.step()` over
      normalised float batches made in memory before the loop (the same images, in the same
      shuffled order, normalised with the same mean and std as trainhub's).

Both seed torch the same way before building the model, so they start from the same weights.
What is timed, in both: steps warmup + 1 .. warmup + steps, from the end of mini-batch
`warmup` to the end of the last one (trainhub: the arrival of the loss points of those two
steps). Its last line is JSON: {"samples_per_second", "seconds", "cpu_seconds" (the
process's CPU time over them), "losses" (the mean loss of each group of `warmup`
mini-batches), "threads" and "onednn" (as the timed steps ran)}.

    .venv/bin/python bench/zoo_arm.py --arm trainhub --model resnet50 --batch 16 \\
        --threads 2 --warmup 2 --steps 10
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMAGE_SHAPE = (3, 32, 32)
CLASSES = 10
LR, MOMENTUM = 0.001, 0.9  # a job's defaults (core.jobspec)


def dataset(images: int, batch: int, seed: int):
    """The arms' data: `images` training images and one test batch (trainhub evaluates it
    after the epoch, untimed), with the mean and std trainhub computes for an upload."""
    from core.tensor_datasets import Split, build_dataset

    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        return Split(torch.randint(0, 256, (n, *IMAGE_SHAPE), dtype=torch.uint8, generator=g),
                     torch.randint(0, CLASSES, (n,), generator=g))

    return build_dataset("zoo-bench", [str(c) for c in range(CLASSES)], split(images),
                         split(batch))


class TimingReporter:
    """worker.reporting's NullReporter, plus when each loss point arrived and how the CPU
    kernels were set (worker.tuning) while the steps ran."""

    def __init__(self) -> None:
        # step -> (value, perf_counter, process_time) at the point's arrival
        self.loss: dict[int, tuple[float, float, float]] = {}
        self.threads = self.onednn = None

    def metrics(self, points) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        for point in points:
            if point.name == "loss":
                self.loss[point.step] = (point.value, now, cpu)
                self.threads = torch.get_num_threads()
                self.onednn = torch.backends.mkldnn.enabled

    def progress(self, epoch: int, step: int, total_steps: int) -> None:
        pass

    def should_stop(self) -> bool:
        return False


def trainhub_arm(args, data) -> dict:
    import models
    from core.jobspec import Hyperparameters
    from worker.control import RunControl
    from worker.loop import fit

    hp = Hyperparameters(epochs=1, batch_size=args.batch, optimizer="sgd", lr=LR,
                         momentum=MOMENTUM, log_every=args.warmup, seed=args.seed)
    torch.manual_seed(hp.seed)
    model = models.build(f"torchvision.{args.model}", data.shape, len(data.classes))
    reporter = TimingReporter()
    result = fit(model, data, hp, torch.device("cpu"), RunControl(reporter))
    if result.stopped or result.step != args.warmup + args.steps:
        raise SystemExit(f"fit stopped at step {result.step}: {result.stop_reason}")
    start, end = reporter.loss[args.warmup], reporter.loss[result.step]
    return {"seconds": end[1] - start[1], "cpu_seconds": end[2] - start[2],
            "losses": [point[0] for _, point in sorted(reporter.loss.items())],
            "threads": reporter.threads, "onednn": reporter.onednn,
            "epoch_samples_per_second": result.final_metrics["samples_per_second"]}


def plain_arm(args, data) -> dict:
    from torch import nn
    from torchvision.models import get_model

    torch.manual_seed(args.seed)
    model = get_model(args.model, weights=None, num_classes=CLASSES)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    criterion = nn.CrossEntropyLoss()
    # trainhub's epoch order (worker.state: a generator seeded with the job's seed).
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(args.seed))
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    x = data.train.images[order].float().div_(255).sub_(mean).div_(std)
    y = data.train.labels[order]
    batches = [(x[i:i + args.batch], y[i:i + args.batch]) for i in range(0, len(y), args.batch)]
    model.train()
    losses, start = [], None
    for step, (inputs, labels) in enumerate(batches, start=1):
        optimizer.zero_grad()
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        if step == args.warmup:
            start, cpu = time.perf_counter(), time.process_time()
    end, cpu_end = time.perf_counter(), time.process_time()
    groups = torch.stack(losses).view(-1, args.warmup).mean(1)
    return {"seconds": end - start, "cpu_seconds": cpu_end - cpu, "losses": groups.tolist(),
            "threads": torch.get_num_threads(), "onednn": torch.backends.mkldnn.enabled}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", choices=("trainhub", "plain"), required=True)
    parser.add_argument("--model", required=True, help="torchvision's name: resnet50")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True,
                        help="untimed mini-batches first (and trainhub's log_every)")
    parser.add_argument("--steps", type=int, required=True,
                        help="timed mini-batches after them: a multiple of --warmup")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.steps % args.warmup:
        parser.error("--steps must be a positive multiple of --warmup (>= 1)")
    torch.set_num_threads(args.threads)
    data = dataset(args.batch * (args.warmup + args.steps), args.batch, args.seed)
    out = (trainhub_arm if args.arm == "trainhub" else plain_arm)(args, data)
    out["samples_per_second"] = args.batch * args.steps / out["seconds"]
    out.update(arm=args.arm, model=args.model, batch=args.batch, steps=args.steps,
               warmup=args.warmup)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
