"""Issue #22's GPU figure: torchvision.resnet50 trained in process by trainhub's own loop
(models.build + worker.loop.fit, `amp: bf16`, `channels_last`) against a plain torchvision
training loop of the same model, batch and input size, in the same run: each one's
training samples/s.

It runs where torch sees a CUDA device. Elsewhere a full run measures nothing and says so in
its section and summary row (no CPU figure stands in for a GPU one); --quick runs both arms
on the CPU on a few small images, in fp32 and contiguous memory, to check that the
benchmark itself works.

Both arms: random weights (no published file is fetched: weights do not change the speed),
the same seeded random uint8 images (3, SIZE, SIZE) and 10 classes held on the device, SGD
(momentum 0.9), bf16 autocast, channels_last, eager. trainhub's samples/s is the median of
its per-epoch `samples_per_second` after the first epoch; the plain loop's (a random
permutation sliced into batches, normalised on the device) the train images over its median
epoch time after the first. Each arm runs in a process of its own:

    .venv/bin/python bench/gpu_finetune_bench.py --arm fit|plain [--size 224 --images 4096
        --batch-size 128 --epochs 4 --amp bf16 --channels-last 1]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

TITLE = "GPU: torchvision.resnet50 fine-tuning in process (fit, bf16, channels_last)"
BENCH = Path(__file__).resolve().parent
MODEL, CLASSES = "resnet50", 10
# On the GPU: ImageNet's input size; 4096 images (600 MB of uint8 on the device).
GPU_RUN = {"size": 224, "images": 4096, "batch_size": 128, "epochs": 4, "amp": "bf16",
           "channels_last": 1}
# --quick on the CPU: bf16 autocast there (without bf16 hardware) takes seconds an image.
QUICK_RUN = {"size": 32, "images": 32, "batch_size": 8, "epochs": 2, "amp": "off",
             "channels_last": 0}
LR, MOMENTUM = 0.01, 0.9


def run(args, progress) -> dict:
    from gpu_resnet_bench import cuda_device

    gpu = cuda_device()
    if gpu is None and not args.quick:
        progress("no CUDA device: the fine-tuning benchmark measures nothing on this machine")
    raw = measure(gpu, args.quick, progress) if gpu is not None or args.quick else {"gpu": None}
    return {"title": TITLE, "raw": raw, "markdown": markdown(raw), "summary": summary(raw)}


def measure(gpu: str | None, quick: bool, progress) -> dict:
    """Both arms, the plain loop first, each in a process of its own."""
    from training_bench import run_script

    setup = dict(GPU_RUN if gpu is not None and not quick else QUICK_RUN)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in setup.items()]
    arms = {}
    for arm in ("plain", "fit"):
        progress(f"{arm}: torchvision {MODEL} on {gpu or 'the CPU'}")
        arms[arm] = run_script([str(BENCH / "gpu_finetune_bench.py"), "--arm", arm, *flags],
                               f"the {arm} arm", progress)
        progress(f"{arm}: {arms[arm]['samples_per_second']:.1f} samples/s")
    return {"gpu": gpu or "the CPU (quick run)", "quick": quick, "setup": setup, **arms}


def markdown(r: dict) -> str:
    if r["gpu"] is None:
        return ("**Not measured: this machine has no CUDA device** (`torch.cuda.is_available()` "
                "is false), and the figure is a GPU one. On a GPU machine, "
                "`.venv/bin/python bench/run.py --only gpu_finetune` runs it: "
                f"`torchvision.{MODEL}` through `worker.loop.fit` (amp bf16, channels_last; "
                f"{GPU_RUN['images']} random {GPU_RUN['size']}×{GPU_RUN['size']} images, batch "
                f"{GPU_RUN['batch_size']}, {GPU_RUN['epochs']} epochs, random weights) against "
                "a plain torchvision loop of the same model, batch, input size, bf16 and "
                "channels_last, in the same run.")
    s, plain, fit = r["setup"], r["plain"], r["fit"]
    ratio = fit["samples_per_second"] / plain["samples_per_second"]
    return "\n".join([
        f"Device: {r['gpu']}; `torchvision.{MODEL}`, random weights, {s['images']} random "
        f"uint8 images of 3×{s['size']}×{s['size']}, {CLASSES} classes, batch "
        f"{s['batch_size']}, {s['epochs']} epochs, SGD, amp {s['amp']}, channels_last "
        f"{bool(s['channels_last'])}, eager.",
        "",
        "| arm | samples/s (after epoch 1) |",
        "|---|---:|",
        f"| plain torchvision loop | {plain['samples_per_second']:,.1f} |",
        f"| **trainhub: `fit` in process** | **{fit['samples_per_second']:,.1f}** |",
        "",
        f"trainhub at {ratio:.2f}× the plain loop."
        + (" A quick run on a few small images on the CPU only checks that the benchmark "
           "runs; its figures mean nothing." if r.get("quick") else ""),
    ])


def summary(r: dict) -> list[dict]:
    row = {"key": "gpu-resnet50-finetune", "target": "—",
           "figure": "GPU: torchvision.resnet50 fine-tuning in process (bf16, channels_last), "
                     "samples/s"}
    if r["gpu"] is None:
        return [{**row, "trainhub": "not measured", "met": None, "measured": False,
                 "result": "no CUDA device on this machine"}]
    plain, fit = r["plain"]["samples_per_second"], r["fit"]["samples_per_second"]
    return [{**row, "trainhub": f"{fit:,.1f} samples/s on {r['gpu']}",
             "reference": f"plain loop: {plain:,.1f} samples/s", "met": None,
             "result": f"{fit / plain:.2f}× the plain loop"}]


# -- the arms, each in its own process ----------------------------------------------------

def data(size: int, images: int):
    import torch

    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8, generator=g),
            torch.randint(0, CLASSES, (images,), generator=g))


def fit_arm(args, device) -> list[float]:
    """trainhub's loop: its per-epoch samples_per_second."""
    import torch

    import models
    from core.jobspec import Hyperparameters
    from core.tensor_datasets import ImageDataset, Split, channel_stats
    from worker.control import RunControl
    from worker.loop import fit
    from worker.reporting import NullReporter

    images, labels = data(args.size, args.images)
    mean, std = channel_stats(images)
    test = Split(images[:args.batch_size], labels[:args.batch_size])
    dataset = ImageDataset("synthetic", [str(i) for i in range(CLASSES)],
                           Split(images, labels), test, mean, std)
    hp = Hyperparameters(epochs=args.epochs, batch_size=args.batch_size, optimizer="sgd",
                         lr=LR, momentum=MOMENTUM, amp=args.amp,
                         channels_last=bool(args.channels_last), log_every=10**6)
    torch.manual_seed(0)
    model = models.build(f"torchvision.{MODEL}", (3, args.size, args.size), CLASSES)
    reporter = NullReporter()
    result = fit(model, dataset, hp, device, RunControl(reporter))
    if result.stopped:
        raise SystemExit(f"fit stopped early: {result.stop_reason}")
    return [p.value for p in reporter.points if p.name == "samples_per_second"]


def plain_arm(args, device) -> list[float]:
    """torchvision's model in the usual hand-written loop: its per-epoch samples/s."""
    import torch
    from torch import nn
    from torchvision.models import resnet50

    from core.tensor_datasets import channel_stats  # what trainhub normalises with

    images, labels = data(args.size, args.images)
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1)
                 for v in channel_stats(images))
    images, labels = images.to(device), labels.to(device)
    torch.manual_seed(0)
    memory = torch.channels_last if args.channels_last else torch.contiguous_format
    net = resnet50(num_classes=CLASSES).to(device, memory_format=memory)
    optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    criterion = nn.CrossEntropyLoss()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    net.train()
    rates = []
    for _ in range(args.epochs):
        started = time.perf_counter()
        order = torch.randperm(len(images), device=device)
        for first in range(0, len(images), args.batch_size):
            batch = order[first:first + args.batch_size]
            inputs = ((images[batch].float() / 255 - mean) / std).contiguous(
                memory_format=memory)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
                loss = criterion(net(inputs), labels[batch])
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(len(images) / (time.perf_counter() - started))
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", choices=("fit", "plain"), required=True)
    for name, value in GPU_RUN.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(BENCH.parent))
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rates = (fit_arm if args.arm == "fit" else plain_arm)(args, device)
    print(json.dumps({"arm": args.arm, "device": str(device), "epoch_samples_per_second": rates,
                      "samples_per_second": statistics.median(rates[1:] or rates)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
