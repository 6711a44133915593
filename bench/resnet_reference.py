"""The plain DataLoader loop the GPU benchmark compares trainhub's ResNet-18 job with.

The way the model is usually trained on CIFAR-10 by hand: the arrays in memory, every item
`PIL.Image.fromarray` through RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor +
Normalize (with the per-channel statistics trainhub computes: core.tensor_datasets.channel_stats)
in DataLoader workers with pinned memory, batches copied to the device, fp32, eager; SGD
(nesterov) with OneCycleLR, as the trainhub job is asked to train. trainhub's own ResNet-18
(models.build), so the arithmetic is the same. It times each epoch's training pass (no
evaluation) and reports the samples/s of the epochs after the first (the first pays for
cuDNN's autotuning and the workers' start).

Reads {train,test}_{images,labels}.npy from --data (bench/tutorial_job.decode_to_npy writes
them). Its last line is JSON: {"device", "epochs", "epoch_seconds", "samples_per_second",
"workers"}.

    .venv/bin/python bench/resnet_reference.py --data DIR [--epochs 3] [--batch-size 512]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as transforms
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tutorial_reference import InMemoryCIFAR  # noqa: E402

import models  # noqa: E402
from core.tensor_datasets import channel_stats  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True,
                        help="folder with {train,test}_{images,labels}.npy")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.4)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="DataLoader num_workers")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images = np.ascontiguousarray(np.load(args.data / "train_images.npy"))
    labels = np.load(args.data / "train_labels.npy")
    # The statistics a trainhub job normalises with (per channel, of the train images).
    mean, std = channel_stats(torch.from_numpy(images).permute(0, 3, 1, 2))
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(
        InMemoryCIFAR(images, labels, transform), batch_size=args.batch_size, shuffle=True,
        num_workers=args.workers, pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0)
    net = models.build("resnet18", (3, 32, 32), 10).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * len(loader), cycle_momentum=False)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    epoch_seconds = []
    net.train()
    for epoch in range(args.epochs):
        started = time.perf_counter()
        for inputs, targets in loader:
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            optimizer.zero_grad()
            loss = criterion(net(inputs), targets)
            loss.backward()
            optimizer.step()
            scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_seconds.append(time.perf_counter() - started)
        print(f"epoch {epoch + 1}: {epoch_seconds[-1]:.2f} s, last loss {loss.item():.3f}",
              flush=True)
    steady = epoch_seconds[1:] or epoch_seconds
    print(json.dumps({"device": str(device), "epochs": args.epochs,
                      "epoch_seconds": epoch_seconds, "workers": args.workers,
                      "samples_per_second": len(images) / statistics.median(steady)}),
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
