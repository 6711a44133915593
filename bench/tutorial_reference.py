"""The PyTorch CIFAR-10 tutorial's own script, with the data already decoded in memory.

The fair reference for P1 (issue #12): the tutorial's code as written ("Training a
Classifier", PyTorch tutorials), except that the dataset is a uint8 array (N, 32, 32, 3) held
in memory, as torchvision's CIFAR10 holds it, rather than read from disk: every item is
`PIL.Image.fromarray(img)` through ToTensor + Normalize((0.5,)*3, (0.5,)*3), a DataLoader of
batch 4, shuffled, 2 workers; the tutorial's Net; CrossEntropyLoss; SGD(lr=0.001,
momentum=0.9); `running_loss += loss.item()` every batch and a print every 2000 mini-batches;
then accuracy over the test set under no_grad.

Reads {train,test}_{images,labels}.npy from --data (bench/tutorial_job.decode_to_npy writes
them) into memory, then times training + test itself. Its last line is JSON:
{"seconds", "train_seconds", "test_seconds", "accuracy", "steps", "loss"}.

    .venv/bin/python bench/tutorial_reference.py --data DIR [--epochs 2] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import torchvision.transforms as transforms
from PIL import Image


class InMemoryCIFAR(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item, over arrays already in memory."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.data, self.targets, self.transform = images, labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        img, target = self.data[index], self.targets[index]
        img = Image.fromarray(img)
        return self.transform(img), target


class Net(nn.Module):  # the tutorial's
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)  # flatten all dimensions except batch
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True,
                        help="folder with {train,test}_{images,labels}.npy")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader num_workers")
    parser.add_argument("--log-every", type=int, default=2000,
                        help="print the running loss every N mini-batches")
    parser.add_argument("--seed", type=int, default=None,
                        help="torch.manual_seed (the tutorial sets none)")
    args = parser.parse_args(argv)
    if args.seed is not None:
        torch.manual_seed(args.seed)

    def load(name: str) -> np.ndarray:
        return np.ascontiguousarray(np.load(args.data / f"{name}.npy"))  # into memory

    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    trainset = InMemoryCIFAR(load("train_images"), load("train_labels"), transform)
    testset = InMemoryCIFAR(load("test_images"), load("test_labels"), transform)
    trainloader = torch.utils.data.DataLoader(trainset, batch_size=args.batch_size,
                                              shuffle=True, num_workers=args.workers)
    testloader = torch.utils.data.DataLoader(testset, batch_size=args.batch_size,
                                             shuffle=False, num_workers=args.workers)
    net = Net()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

    started = time.perf_counter()
    losses, steps = [], 0
    for epoch in range(args.epochs):  # loop over the dataset multiple times
        running_loss = 0.0
        for i, data in enumerate(trainloader, 0):
            # get the inputs; data is a list of [inputs, labels]
            inputs, labels = data
            # zero the parameter gradients
            optimizer.zero_grad()
            # forward + backward + optimize
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            steps += 1
            # print statistics
            running_loss += loss.item()
            if i % args.log_every == args.log_every - 1:  # every 2000 mini-batches
                print(f"[{epoch + 1}, {i + 1:5d}] loss: {running_loss / args.log_every:.3f}",
                      flush=True)
                losses.append([epoch + 1, i + 1, running_loss / args.log_every])
                running_loss = 0.0
    print("Finished Training", flush=True)
    trained = time.perf_counter()

    correct = 0
    total = 0
    # since we're not training, we don't need to calculate the gradients for our outputs
    with torch.no_grad():
        for data in testloader:
            images, labels = data
            # calculate outputs by running images through the network
            outputs = net(images)
            # the class with the highest energy is what we choose as prediction
            _, predicted = torch.max(outputs.data, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    finished = time.perf_counter()
    print(f"Accuracy of the network on the {total} test images: {100 * correct // total} %")
    print(json.dumps({"seconds": finished - started, "train_seconds": trained - started,
                      "test_seconds": finished - trained, "accuracy": correct / total,
                      "steps": steps, "loss": losses}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
