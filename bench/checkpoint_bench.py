"""What mid-epoch resume checkpoints cost: the time to write one (ResumeWriter into the local
artifact store, fsync included) against training time, for the default interval."""
from __future__ import annotations

import statistics
import tempfile
import time

TITLE = "Mid-epoch resume checkpoints: cost at the default interval"


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint-repeats", type=int, default=5,
                        help="checkpoints written per model (median reported)")


def _measure(model_name: str, batch_size: int, steps: int, repeats: int, progress) -> dict:
    import torch

    import models
    from core.artifacts import LocalArtifactStore
    from core.config import Settings
    from core.jobspec import Hyperparameters
    from core.tensor_datasets import ImageDataset, Split
    from worker.checkpointing import ResumeWriter
    from worker.recipe import make_criterion, new_state

    shape, classes = (3, 32, 32), [str(i) for i in range(10)]
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch_size * steps, *shape), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (batch_size * steps,), generator=g)
    dataset = ImageDataset("bench", classes, Split(images, labels), Split(images[:8], labels[:8]),
                           [0.5] * 3, [0.25] * 3)
    hp = Hyperparameters(epochs=1, batch_size=batch_size, lr=0.01)
    torch.manual_seed(0)
    model = models.build(model_name, shape, len(classes))
    state = new_state(model, hp, steps)
    state.start_accumulators(torch.device("cpu"))
    criterion = make_criterion(hp.loss, len(classes))
    x = images.float().div_(255)
    model.train()
    started = time.perf_counter()
    for i in range(steps):  # the loop's step, so the optimizer has its full state
        batch = slice(i * batch_size, (i + 1) * batch_size)
        state.optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x[batch]), labels[batch])
        loss.backward()
        state.optimizer.step()
        state.step += 1
    step_s = (time.perf_counter() - started) / steps
    spec = {"model": model_name, "dataset": "bench", "hyperparameters": hp.model_dump()}
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalArtifactStore(tmp)
        writer = ResumeWriter("0" * 32, spec, dataset, store)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            writer(state)
            times.append(time.perf_counter() - t0)
        size = (store.path(f"jobs/{'0' * 32}/checkpoints/resume.pt")).stat().st_size
    interval = Settings().checkpoint_every_seconds
    save_s = statistics.median(times)
    progress(f"{model_name}: {size / 1e6:.1f} MB in {save_s * 1000:.0f} ms; "
             f"a step takes {step_s * 1000:.1f} ms")
    return {"model": model_name, "batch_size": batch_size, "bytes": size,
            "save_s_median": save_s, "save_s_all": times, "step_s": step_s,
            "interval_s": interval, "cost_percent": 100 * save_s / (interval + save_s)}


def run(args, progress) -> dict:
    repeats = max(1, 2 if args.quick else args.checkpoint_repeats)
    rows = [_measure("lenet", 4, 200, repeats, progress),
            _measure("resnet18", 128, 3 if args.quick else 10, repeats, progress)]
    interval = rows[0]["interval_s"]
    lines = [f"A resume checkpoint holds the weights, the optimizer and scheduler states, the "
             f"RNGs and the epoch's position; the worker writes one every "
             f"`TRAINHUB_CHECKPOINT_EVERY_SECONDS` ({interval:g} s by default) and at a "
             "graceful stop. Cost = time to write one / (interval + that time).", "",
             "| model (CIFAR-10 shape) | file | write (median) | one training step | "
             f"cost at {interval:g} s |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']}, batch {r['batch_size']} | {r['bytes'] / 1e6:.1f} MB | "
                     f"{r['save_s_median'] * 1000:.0f} ms | {r['step_s'] * 1000:.1f} ms | "
                     f"**{r['cost_percent']:.2f}%** |")
    worst = max(r["cost_percent"] for r in rows)
    lines += ["", f"Target: under 2% of training time — {'met' if worst < 2 else 'NOT met'} "
                  f"(worst {worst:.2f}%)."]
    summary = [{"key": "checkpoint", "figure": "Mid-epoch resume checkpoints: share of "
                f"training time at the default {interval:g} s interval (worst model)",
                "trainhub": ", ".join(f"{r['model']} {r['cost_percent']:.2f}%" for r in rows),
                "target": "< 2%", "met": worst < 2, "result": f"worst {worst:.2f}%"}]
    return {"title": TITLE, "markdown": "\n".join(lines), "raw": rows, "summary": summary}
