"""The zoo at the framework's speed (issue #26 item 4): for torchvision's mobilenet_v3_small,
resnet50 and swin_t, trainhub's training loop (worker.loop.fit on models.build's model)
against a plain PyTorch loop of the same model, data, batch, thread count and steps, on the
CPU, each run in a fresh process (bench/zoo_arm.py, which says what each arm runs and what
it times).

For each model, --zoo-pairs pairs of runs (default 7, quick 1), the two arms alternating
which goes first; per pair the ratio trainhub samples/s / plain samples/s, and the median of
those ratios is judged against the target: trainhub at most 5% slower (ratio >= 0.95).

Run it on an idle machine: with two threads on two cores, another busy process stalls every
op's thread barrier (swin_t, batch 16, plain loop, measured while other tests ran: 4.1
samples/s at two threads against 18.8 at one), so a busy machine makes the ratio meaningless.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from training_bench import run_script, stats

TITLE = "The zoo at the framework's speed: torchvision models, trainhub's loop vs a plain loop"
BENCH = Path(__file__).resolve().parent
TARGET_RATIO = 0.95  # trainhub's samples/s at least 95% of the plain loop's
DEFAULT_BATCH = 16
# (torchvision name, untimed warm-up mini-batches, timed mini-batches: full run, --quick).
# Sized from step times measured here at one thread (batch 16: mobilenet_v3_small 0.08 s,
# resnet50 0.33 s, swin_t 0.84 s) and about 4 s to start each process: about 8 minutes in
# all on 2 cores, --quick about one (1.5 beside other tests). Many short pairs rather than
# a few long ones: this machine's speed drifts by 10-15% from one run to the next (resnet50's
# plain loop, back to back: 68 to 80 samples/s), and a pair's ratio cancels the drift only
# while its two runs are close in time.
PLAN = (("mobilenet_v3_small", 2, 40, 8), ("resnet50", 2, 16, 4), ("swin_t", 2, 8, 2))


def add_arguments(parser) -> None:
    parser.add_argument("--zoo-pairs", type=int, default=None,
                        help="zoo: pairs of runs (trainhub, plain) per model (default 7, "
                             "quick 1)")
    parser.add_argument("--zoo-batch", type=int, default=DEFAULT_BATCH,
                        help=f"zoo: the mini-batch of both arms (default {DEFAULT_BATCH})")
    parser.add_argument("--zoo-threads", type=int, default=None,
                        help="zoo: torch intra-op threads of both arms (default: torch's "
                             "own default here, what a worker process gets)")


def run(args, progress) -> dict:
    import torch

    pairs = args.zoo_pairs or (1 if args.quick else 7)
    threads = args.zoo_threads or torch.get_num_threads()
    if pairs <= 0 or threads <= 0 or args.zoo_batch <= 1:
        raise SystemExit("--zoo-pairs and --zoo-threads must be > 0, --zoo-batch > 1")
    results = []
    for name, warmup, full, quick in PLAN:
        steps = quick if args.quick else full
        runs: dict[str, list[dict]] = {"trainhub": [], "plain": []}
        for pair in range(pairs):
            for arm in (("trainhub", "plain") if pair % 2 == 0 else ("plain", "trainhub")):
                out = run_script([str(BENCH / "zoo_arm.py"), "--arm", arm, "--model", name,
                                  "--batch", str(args.zoo_batch), "--threads", str(threads),
                                  "--warmup", str(warmup), "--steps", str(steps)],
                                 f"zoo {arm} arm ({name})", progress, timeout=900)
                runs[arm].append(out)
                progress(f"{name} pair {pair + 1}/{pairs}: {arm} "
                         f"{out['samples_per_second']:.1f} samples/s "
                         f"({out['threads']} thread(s) in the steps)")
        results.append(judge(name, warmup, steps, runs))
    raw = {"pairs": pairs, "batch": args.zoo_batch, "threads": threads, "models": results}
    return {"title": TITLE, "raw": raw, "markdown": markdown(raw), "summary": summary(raw)}


def judge(name: str, warmup: int, steps: int, runs: dict[str, list[dict]]) -> dict:
    ratios = [a["samples_per_second"] / b["samples_per_second"]
              for a, b in zip(runs["trainhub"], runs["plain"])]
    ratio = statistics.median(ratios)
    losses = [abs(a - b) for x, y in zip(runs["trainhub"], runs["plain"])
              for a, b in zip(x["losses"], y["losses"])]
    return {"model": name, "warmup": warmup, "steps": steps, "runs": runs,
            "samples_per_second": {arm: stats([r["samples_per_second"] for r in rows])
                                   for arm, rows in runs.items()},
            "ratios": ratios, "ratio": ratio, "met": ratio >= TARGET_RATIO,
            "loss_difference": max(losses) if losses else None,
            "threads": {arm: sorted({r["threads"] for r in rows}) for arm, rows in runs.items()},
            "onednn": {arm: sorted({r["onednn"] for r in rows}) for arm, rows in runs.items()}}


def _mmm(s: dict) -> str:
    return " / ".join(f"{s[k]:.1f}" for k in ("min", "median", "max"))


def _verdict(m: dict) -> str:
    slower = 100 * (1 - m["ratio"])
    return (f"{'met' if m['met'] else 'NOT met'}: ratio {m['ratio']:.3f} "
            f"({abs(slower):.1f}% {'slower' if slower >= 0 else 'faster'})")


def _listed(values: list) -> str:
    return ", ".join(("on" if v else "off") if isinstance(v, bool) else str(v) for v in values)


def markdown(r: dict) -> str:
    lines = [
        f"Each model trained on the CPU for warm-up + timed mini-batches of {r['batch']} "
        "synthetic CIFAR-10-shaped images (uint8 3x32x32, 10 classes, the models' own "
        "input size here: trainhub resizes nothing, repeats no channel), SGD lr 0.001 "
        f"momentum 0.9, {r['threads']} torch intra-op thread(s) set in both arms "
        "(`torch.set_num_threads`), each run a fresh process "
        f"(`bench/zoo_arm.py`), {r['pairs']} pair(s) per model, the arms alternating which "
        "goes first.",
        "",
        "- **trainhub**: `models.build(\"torchvision.<name>\")` and `worker.loop.fit` (one "
        "epoch, log_every = the warm-up) with an in-memory reporter: the job as the worker "
        "runs it, less the service (no metric sink, no checkpoints), its dataset as an upload "
        "holds it (uint8, normalised a block at a time by the loop, shuffled by the job's "
        "seed).",
        "- **plain loop**: `torchvision.models.get_model(name, num_classes=10)` and `for x, y "
        "in batches: opt.zero_grad(); loss = crit(model(x), y); loss.backward(); "
        "opt.step()` over the same images in the same order, normalised to float batches "
        "before the loop (untimed).",
        "- **Timed**: the mini-batches after the warm-up ones, from the end of the last "
        "warm-up mini-batch to the end of the last one, in both arms (trainhub: the arrival "
        "of those two steps' loss points). samples/s = timed mini-batches x batch / seconds. "
        "Both arms start from the same weights and see the same batches: the loss column is "
        "the largest difference between their mean losses (per group of warm-up "
        "mini-batches), 0 when they computed the same values.",
        "",
        "| model | steps (warm-up + timed) | trainhub samples/s (min / median / max) | "
        "plain loop samples/s | ratio (median of pairs) | threads in the steps (trainhub, "
        "plain) | loss difference | met? (≥ "
        f"{TARGET_RATIO:.2f}) |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    notes = []
    for m in r["models"]:
        s = m["samples_per_second"]
        diff = m["loss_difference"]
        lines.append(
            f"| {m['model']} | {m['warmup']} + {m['steps']} | {_mmm(s['trainhub'])} | "
            f"{_mmm(s['plain'])} | {m['ratio']:.3f} | {_listed(m['threads']['trainhub'])}, "
            f"{_listed(m['threads']['plain'])} | "
            f"{'—' if diff is None else f'{diff:.2g}'} | {_verdict(m)} |")
        if m["threads"]["trainhub"] != m["threads"]["plain"] \
                or m["onednn"]["trainhub"] != m["onednn"]["plain"]:
            notes.append(
                f"- {m['model']}: trainhub's steps ran with {_listed(m['threads']['trainhub'])}"
                f" thread(s), oneDNN {_listed(m['onednn']['trainhub'])}, against "
                f"{_listed(m['threads']['plain'])}, oneDNN {_listed(m['onednn']['plain'])} in "
                "the plain loop: `worker.tuning` chooses native convolutions and one thread "
                "when the model's convolutions do at most 5M multiply-adds per batch.")
    if notes:
        lines += ["", "Where the arms' CPU settings differed:", "", *notes]
    return "\n".join(lines)


def summary(r: dict) -> list[dict]:
    return [{"key": f"zoo-{m['model']}",
             "figure": f"Zoo: {m['model']} on the CPU, batch {r['batch']} at 32x32, "
                       f"{r['threads']} thread(s): training samples/s",
             "trainhub": _mmm(m["samples_per_second"]["trainhub"]),
             "reference": f"plain loop: {_mmm(m['samples_per_second']['plain'])}",
             "target": f"≤ {100 * (1 - TARGET_RATIO):.0f}% slower", "met": m["met"],
             "result": f"ratio {m['ratio']:.3f}"} for m in r["models"]]
