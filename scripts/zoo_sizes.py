"""Regenerate models/zoo_sizes.json: what each torchvision classification architecture
(torchvision.models.list_models(module=torchvision.models)) needs to train.

    .venv/bin/python scripts/zoo_sizes.py            # every architecture (about 10 minutes
                                                     # on 2 cores), then writes the table
    .venv/bin/python scripts/zoo_sizes.py resnet50   # re-measure some, keep the others

Per architecture: its family (torchvision's module), where its classifier head is
(models.heads), its parameter count with 10 classes and what one more class adds, whether it
has BatchNorm, torchvision's pretrained weights for it (get_model_weights), and the smallest
square input it trains at: one SGD step in train mode at batch 2 (the weights' min_size is an
evaluation value). A size found to be the only one it takes (ViT, MaxViT) is its fixed size.
tests/unit/models/test_zoo_sizes.py trains every listed architecture at its size to check.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from torchvision import models as tv  # noqa: E402

from models.heads import HEAD_PATHS, find_head, head_path_text, parameters_per_class  # noqa: E402
from models.zoo import build_network, has_batchnorm  # noqa: E402
from models.zoo_table import TABLE_CLASSES, TABLE_FILE  # noqa: E402

BATCH = 2
# Sizes tried from the smallest up; the minimum is then searched between the last that
# failed and the first that trained.
LADDER = (1, 2, 4, 8, 16, 32, 64, 128, 224, 299)


def family_of(name: str) -> str:
    return tv.get_model_builder(name).__module__.rsplit(".", 1)[-1]


def train_step(net: torch.nn.Module, size: int, num_classes: int = TABLE_CLASSES,
               batch: int = BATCH, step: bool = True) -> float:
    """One SGD step in train mode on a random batch of size x size images; the loss. Without
    `step`, forward and backward only: the weights stay as they were (a search tries many
    sizes on one network, and steps at 1x1 maps can drive its weights to NaN)."""
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    optimizer.zero_grad(set_to_none=True)
    out = net(torch.randn(batch, 3, size, size))
    out = out[0] if isinstance(out, tuple) else out
    loss = F.cross_entropy(out, torch.arange(batch) % num_classes)
    loss.backward()
    if step:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if tuple(out.shape) != (batch, num_classes) or not torch.isfinite(loss):
        raise RuntimeError(f"output {tuple(out.shape)}, loss {loss.item()}")
    return loss.item()


def trains(net: torch.nn.Module, size: int) -> bool:
    try:
        train_step(net, size, step=False)
        return True
    except Exception:  # noqa: BLE001 - any failure means: not at this size
        return False


def smallest_size(net: torch.nn.Module) -> tuple[int, bool]:
    """(the smallest square size it trains at, whether that is the only one)."""
    failed = 0
    for size in LADDER:
        if trains(net, size):
            break
        failed = size
    else:
        raise RuntimeError(f"trains at none of {LADDER}")
    low, high = failed, size  # low fails (0: nothing below tried), high trains
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if trains(net, mid) else (mid, high)
    if trains(net, 2 * high + 1):  # a size far above: any larger size should train too
        bad = [s for s in range(high + 1, high + 9) if not trains(net, s)]
        if bad:
            raise RuntimeError(f"trains at {high} and {2 * high + 1} but not at {bad}")
        return high, False
    # A band of sizes that ends above (ViT: 224 alone; MaxViT: 221 to 224, which its
    # attention grid rounds alike): the band's top, the builder's own size, is the one.
    while trains(net, high + 1):
        high += 1
    return high, True


def measure(name: str) -> dict:
    torch.manual_seed(0)
    net = build_network(name, TABLE_CLASSES)
    family = family_of(name)
    if family not in HEAD_PATHS:
        raise RuntimeError(f"{name}: family {family} has no head path in models/heads.py")
    _, _, head = find_head(net, family)
    size, fixed = smallest_size(net)
    return {
        "family": family,
        "head": head_path_text(family),
        "parameters": sum(p.numel() for p in net.parameters()),
        "parameters_per_class": parameters_per_class(head),
        "min_size": size,
        "fixed_size": [size, size] if fixed else None,
        "batchnorm": has_batchnorm(net),
        "weights": [w.name for w in tv.get_model_weights(name)],
    }


def main(argv: list[str]) -> int:
    names = tv.list_models(module=tv)
    only = argv or names
    unknown = sorted(set(only) - set(names))
    if unknown:
        print(f"not torchvision classification builders: {', '.join(unknown)}", file=sys.stderr)
        return 2
    table = json.loads(TABLE_FILE.read_text()) if argv and TABLE_FILE.exists() else {}
    entries = {n: e for n, e in table.get("architectures", {}).items() if n in names}
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for name in only:
        start = time.perf_counter()
        entries[name] = measure(name)
        print(f"{name:22s} {json.dumps(entries[name])} ({time.perf_counter() - start:.1f} s)",
              flush=True)
    table = {
        "generated_by": "scripts/zoo_sizes.py",
        "torch": torch.__version__.split("+")[0],
        "torchvision": torchvision.__version__.split("+")[0],
        "parameters_at_classes": TABLE_CLASSES,
        "train_batch": BATCH,
        "architectures": {n: entries[n] for n in sorted(entries)},
    }
    TABLE_FILE.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {TABLE_FILE.relative_to(ROOT)} ({len(entries)} architectures)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
