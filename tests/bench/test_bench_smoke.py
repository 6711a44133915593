"""`make bench`'s short form as smoke checks (issue #12: they must run, not be fast).

Each benchmark module runs on its own, `bench/run.py --quick --no-write --only <module>`, in a
subprocess with the environment `make bench` would have (no TRAINHUB_* settings of the test
session), so a failure names the module. The printed report must hold the module's section
and the summary table; the training module's must hold the `P1 ratio:` line, the asha
module's (real API and worker processes: pausing and promoting happen between them) a seed's
row and the claim's verdict."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
DEFAULT_ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10-jpg.tar.gz"  # tutorial_job's

MODULES = sorted(p.stem for p in BENCH.glob("*_bench.py"))
NEEDS_CIFAR = {"cifar_tutorial_bench", "gpu_resnet_bench", "training_bench"}


def test_every_benchmark_module_is_smoke_tested():
    assert {"api_reads_bench", "ingest_bench", "predict_bench", "training_bench",
            "cifar_tutorial_bench", "asha_bench"} <= set(MODULES)


def _title(module: str) -> str:
    source = (BENCH / f"{module}.py").read_text()
    return re.search(r'^TITLE = "(.*)"$', source, re.M).group(1)


@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES)
def test_quick_benchmark_runs(module):
    archive = Path(os.environ.get("BENCH_CIFAR_ARCHIVE", DEFAULT_ARCHIVE))
    if module in NEEDS_CIFAR and not archive.is_file():
        pytest.skip(f"the CIFAR-10 archive {archive} is not here (shared/datasets)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINHUB_")}
    done = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--no-write",
                           "--only", module], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=540)
    out = done.stdout
    assert done.returncode == 0, f"{module} failed:\n{out[-6000:]}\n{done.stderr[-6000:]}"
    assert f"## {_title(module)}\n" in out, out[-3000:]
    assert "## Summary\n" in out and "| figure | trainhub (min / median / max) |" in out
    if module == "training_bench":
        assert re.search(r"^P1 ratio: \d+\.\d+$", out, re.M), out[-3000:]
        assert re.search(r"^\| P1: tutorial job .*\|$", out, re.M)
        assert re.search(r"^P2 overhead .*: (met|NOT met): [+-]\d", out, re.M)
    if module == "asha_bench":  # 3 trials, max_epochs 3: a seed's row and the claim's line
        assert re.search(r"^\| 0 \| \d+\.\d\d% \| \d+\.\d\d% \| [+-]\d+\.\d\d \| 5 \| 9 \|",
                         out, re.M), out[-3000:]
        assert re.search(r"^Claim \(median .*\): (met|NOT met): [+-]\d", out, re.M)


_RENDER = """
import json, sys
sys.path[:0] = [{bench!r}]
import run
info = dict(busy_before=0.0, cpu="c", cores=2, cores_available=2, memory="m", os="o",
            python="p", torch="t", torch_threads=1, date="d", git="g", command="c")
rows = [dict(key="P1", figure="P1", met={met}, result="r")]
print(json.dumps(run.render(info, [dict(title="T", markdown="m", summary=rows)], {quick})))
"""


@pytest.mark.parametrize("met, quick, shown", [(False, False, True), (True, False, False),
                                               (False, True, False)])
def test_whats_left_follows_the_summary_of_a_full_run_that_missed_a_target(met, quick, shown):
    done = subprocess.run([sys.executable, "-c", _RENDER.format(bench=str(BENCH), met=met,
                                                                quick=quick)],
                          capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(done.stdout)
    heading = (BENCH / "whats_left.md").read_text().splitlines()[0]
    assert (heading in report) is shown
    if shown:
        assert report.index("Not met: P1.") < report.index(heading) < report.index("## Machine")


_GPU_REPORT = """
import json, sys
sys.path[:0] = [{bench!r}]
import gpu_resnet_bench as gpu, run
job = dict(id="j", device="cuda", seconds_from_post=50.0, running_seconds={running},
           accuracy={accuracy}, samples_per_second={rate}, epoch_samples_per_second=[1.0])
measured = dict(gpu="NVIDIA H100", quick=False, hyperparameters=gpu.GPU_HP,
                images=dict(train=50000, test=10000), job=job,
                reference=dict(samples_per_second=10000.0, workers=8, epochs=3))
rows = gpu.summary(measured) + gpu.summary(dict(gpu=None))
print(json.dumps(dict(met=rows[0]["met"], markdown=gpu.markdown(measured),
                      table="\\n".join(run.summary_table(rows)))))
"""


@pytest.mark.parametrize("running, accuracy, rate, met", [
    (55.0, 0.935, 31000.0, True),
    (65.0, 0.935, 31000.0, False),  # over 60 s of job time
    (55.0, 0.925, 31000.0, False),  # under 93%
    (55.0, 0.935, 29000.0, False),  # under 3x the DataLoader loop
])
def test_gpu_benchmark_judges_all_three_targets(running, accuracy, rate, met):
    done = subprocess.run([sys.executable, "-c", _GPU_REPORT.format(
        bench=str(BENCH), running=running, accuracy=accuracy, rate=rate)],
        capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(done.stdout)
    assert report["met"] is met
    assert ("**not met**" in report["markdown"]) is not met
    assert f"Speed-up {rate / 10000:.2f}×" in report["markdown"]
    # a machine without CUDA says so rather than filling the row with a CPU figure
    assert ("Not measured on this machine: GPU: ResNet-18, CIFAR-10, through the API "
            "(no CUDA device on this machine).") in report["table"]


_ASHA_REPORT = """
import json, sys
sys.path[:0] = [{bench!r}]
import asha_bench as asha
seeds = [dict(seed=n, asha_best=a, random_best=0.95, gap_points=(0.95 - a) * 100,
              asha_epochs=63, random_epochs=243, asha_seconds=30.0 + n, random_seconds=90.0,
              asha_rungs=[27, 9, 3], last_rung_trials=[4, 7, 1], last_rung_equal=3,
              random_best_trial=4, random_best_at_last_rung=True)
         for n, a in enumerate({asha_bests})]
raw = dict(seeds=seeds, trials=27, max_epochs=9, cores=2, cpu="c", busy_before=0.0, git="g",
           date="d", medians=asha.medians(seeds))
print(json.dumps(dict(markdown=asha.markdown(raw), summary=asha.summary(raw))))
"""


@pytest.mark.parametrize("asha_bests, met, gap", [
    ([0.94, 0.93, 0.90], True, "+2.00"),  # the median seed's gap is exactly 2 points
    ([0.94, 0.92, 0.90], False, "+3.00"),
    ([0.96, 0.96, 0.90], True, "-1.00"),  # asha ahead on the median seed
])
def test_asha_benchmark_judges_the_median_gap(asha_bests, met, gap):
    done = subprocess.run([sys.executable, "-c", _ASHA_REPORT.format(
        bench=str(BENCH), asha_bests=asha_bests)], capture_output=True, text=True,
        timeout=120, check=True)
    report = json.loads(done.stdout)
    assert report["summary"][0]["met"] is met
    verdict = "met" if met else "NOT met"
    assert f"within 2 points of random's): {verdict}: {gap} points." in report["markdown"]
    assert "Epochs: 63 against 243 (0.26); wall time: 31.0 s against 90.0 s (0.34)." \
        in report["markdown"]
    assert "| **median** |" in report["markdown"]


_FINETUNE_REPORT = """
import json, sys
sys.path[:0] = [{bench!r}]
import gpu_finetune_bench as g, run
measured = dict(gpu="NVIDIA H100", quick=False, setup=g.GPU_RUN,
                plain=dict(samples_per_second=2000.0), fit=dict(samples_per_second=1900.0))
rows = g.summary(measured) + g.summary(dict(gpu=None))
print(json.dumps(dict(markdown=g.markdown(measured), unmeasured=g.markdown(dict(gpu=None)),
                      table="\\n".join(run.summary_table(rows)))))
"""


def test_finetune_benchmark_gives_both_arms_or_says_it_measured_nothing():
    """Issue #22's GPU figure: fit's samples/s beside the plain loop's on a GPU; elsewhere a
    'not measured' row and section, never a CPU figure."""
    done = subprocess.run([sys.executable, "-c", _FINETUNE_REPORT.format(bench=str(BENCH))],
                          capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(done.stdout)
    assert "Device: NVIDIA H100; `torchvision.resnet50`, random weights" in report["markdown"]
    assert "| plain torchvision loop | 2,000.0 |" in report["markdown"]
    assert "trainhub at 0.95× the plain loop." in report["markdown"]
    assert "| 1,900.0 samples/s on NVIDIA H100 | plain loop: 2,000.0 samples/s |" \
        in report["table"]
    assert report["unmeasured"].startswith("**Not measured: this machine has no CUDA device**")
    assert ("Not measured on this machine: GPU: torchvision.resnet50 fine-tuning in process "
            "(bf16, channels_last), samples/s (no CUDA device on this machine).") \
        in report["table"]
