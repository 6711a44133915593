"""Sweeps: ASHA against random search over the same trials (issue #25's acceptance).

Distributed mode on the local PostgreSQL and Redis (`make services`): a fresh database, a
queue of its own, a real API process (`python -m cli api`) and ONE real worker process
(`python -m cli worker`), both with the defaults a user gets, and one plain job to warm the
worker up. For each seed, two sweeps of lenet on digits over lr (loguniform), momentum
(uniform, SGD) and batch_size (choice), one after the other on that one worker (the order
alternates from seed to seed, so neither always runs first):
  - strategy asha (min_epochs 1, reduction_factor 3, max_epochs 9, max_concurrent 1);
  - strategy random, the same seed and max_trials, base epochs 9: every trial trains all 9.
Trial n's sampled values depend on the seed and n alone, so both sweeps try the same
configurations (checked: any difference fails the run). Recorded per sweep: `best.value`
(eval_accuracy), `epochs_spent`, and the wall time from the API's `created_at` (the POST) to
its `finished_at` (the sweep's end). The claim is judged on the median over the seeds of
random's best minus asha's best: within 2 points."""
from __future__ import annotations

import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from api_reads_bench import REDIS, _drop_queue, _start_api
from ingest_bench import _create_db, _drop_db, _pg_url

TITLE = "Sweeps: ASHA against random search"
ROOT = Path(__file__).resolve().parent.parent
CLAIM_POINTS = 2.0  # asha's best at most this many accuracy points below random's
SPACE = {"hyperparameters.lr": {"loguniform": [1e-3, 0.3]},
         "hyperparameters.momentum": {"uniform": [0.8, 0.99]},
         "hyperparameters.batch_size": {"choice": [16, 32, 64]}}


def add_arguments(parser) -> None:
    parser.add_argument("--asha-seeds", type=int, default=None,
                        help="sweep seeds 0..N-1, each an asha and a random sweep "
                             "(default 3, quick 1)")
    parser.add_argument("--asha-trials", type=int, default=None,
                        help="max_trials of each sweep (default 27, quick 3)")
    parser.add_argument("--asha-max-epochs", type=int, default=None,
                        help="asha's max_epochs and random's epochs (default 9, quick 3)")


def sweep_bodies(seed: int, trials: int, max_epochs: int) -> dict[str, dict]:
    base = {"model": "lenet", "dataset": "digits",
            "hyperparameters": {"optimizer": "sgd", "epochs": max_epochs}}
    common = {"base": base, "space": SPACE, "metric": "eval_accuracy", "mode": "max",
              "max_trials": trials, "max_concurrent": 1, "seed": seed}
    return {"asha": {**common, "name": f"bench-asha-s{seed}", "strategy": "asha",
                     "asha": {"min_epochs": 1, "reduction_factor": 3,
                              "max_epochs": max_epochs}},
            "random": {**common, "name": f"bench-random-s{seed}", "strategy": "random"}}


def _start_worker(env: dict, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "wb")
    worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--name", "asha@bench"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()  # the child holds its own copy
    deadline = time.monotonic() + 90
    while " ready." not in log_path.read_text(errors="replace"):
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            raise RuntimeError(f"the worker did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    return worker


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _seconds(sweep: dict) -> float:
    created = dt.datetime.fromisoformat(sweep["created_at"])
    return (dt.datetime.fromisoformat(sweep["finished_at"]) - created).total_seconds()


def run_sweep(http: httpx.Client, body: dict, progress, timeout: float) -> dict:
    """POST the sweep, poll it to its end; the sweep, its trials by number, the client's
    wall time."""
    started = time.perf_counter()
    made = http.post("/sweeps", json=body)
    if made.status_code != 201:
        raise RuntimeError(f"POST /sweeps: {made.status_code} {made.text}")
    sweep_id, deadline = made.json()["id"], time.monotonic() + timeout
    while True:
        sweep = http.get(f"/sweeps/{sweep_id}").raise_for_status().json()
        if sweep["status"] != "running":
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"sweep {body['name']} still running after {timeout:.0f} s: "
                               f"{sweep['trials']}")
        time.sleep(0.5)
    client_seconds = time.perf_counter() - started
    if sweep["status"] != "succeeded" or sweep["best"] is None:
        raise RuntimeError(f"sweep {body['name']} ended {sweep['status']}: {sweep['error']}")
    jobs = http.get("/jobs", params={"sweep": sweep_id, "limit": 500}).raise_for_status()
    trials = {job["sweep"]["trial"]: job for job in jobs.json()["jobs"]}
    progress(f"{body['name']}: best {sweep['best']['value']:.4f} (trial "
             f"{sweep['best']['trial']}), {sweep['epochs_spent']} epochs, "
             f"{_seconds(sweep):.1f} s")
    return {"sweep": sweep, "trials": trials, "client_seconds": client_seconds}


def warm_up(http: httpx.Client, progress) -> None:
    """One plain job first: the worker's first job pays its child's torch warm-up and the
    dataset's first load (about 4 s here), which would otherwise land on the first sweep."""
    job = http.post("/jobs", json={"model": "lenet", "dataset": "digits",
                                   "hyperparameters": {"epochs": 1}}).raise_for_status().json()
    deadline = time.monotonic() + 300
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the warm-up job is still {job['status']} after 300 s")
        time.sleep(0.5)
        job = http.get(f"/jobs/{job['id']}").raise_for_status().json()
    if job["status"] != "succeeded":
        raise RuntimeError(f"the warm-up job ended {job['status']}: {job['error']}")
    progress("warm-up job done")


def compare(seed: int, asha: dict, rand: dict, trials: int, max_epochs: int) -> dict:
    """One seed's figures; raises when the two sweeps did not try the same configurations."""
    for name, done in (("asha", asha), ("random", rand)):
        if sorted(done["trials"]) != list(range(trials)):
            raise RuntimeError(f"seed {seed}: {name} made trials {sorted(done['trials'])}")
    for n in range(trials):
        a, r = asha["trials"][n], rand["trials"][n]
        if a["sweep"]["values"] != r["sweep"]["values"]:
            raise RuntimeError(f"seed {seed}, trial {n}: asha drew {a['sweep']['values']}, "
                               f"random {r['sweep']['values']}")
        if r["status"] != "succeeded" or r["spec"]["hyperparameters"]["epochs"] != max_epochs:
            raise RuntimeError(f"seed {seed}: random's trial {n} is {r['status']}, "
                               f"epochs {r['spec']['hyperparameters']['epochs']}")
    last_rung = asha["sweep"]["rungs"][-1]["trials"]
    rand_best = rand["sweep"]["best"]
    asha_best = asha["sweep"]["best"]
    return {
        "seed": seed,
        "asha_best": asha_best["value"], "asha_best_trial": asha_best["trial"],
        "random_best": rand_best["value"], "random_best_trial": rand_best["trial"],
        "gap_points": (rand_best["value"] - asha_best["value"]) * 100,
        "asha_epochs": asha["sweep"]["epochs_spent"],
        "random_epochs": rand["sweep"]["epochs_spent"],
        "asha_seconds": _seconds(asha["sweep"]), "random_seconds": _seconds(rand["sweep"]),
        "asha_client_seconds": asha["client_seconds"],
        "random_client_seconds": rand["client_seconds"],
        "asha_rungs": [r["reached"] for r in asha["sweep"]["rungs"]],
        "asha_rung_table": [[(t["trial"], t["value"], t["promoted"]) for t in r["trials"]]
                            for r in asha["sweep"]["rungs"]],
        "random_values": [rand["trials"][n]["metrics"].get("eval_accuracy")
                          for n in range(trials)],
        "asha_statuses": {k: v for k, v in asha["sweep"]["trials"].items() if v},
        # A trial asha trained to the end is the same run as random's trial of that number.
        "last_rung_trials": [t["trial"] for t in last_rung],
        "last_rung_equal": sum(t["value"] == rand["trials"][t["trial"]]["metrics"].get(
            "eval_accuracy") for t in last_rung),
        "random_best_at_last_rung": rand_best["trial"] in {t["trial"] for t in last_rung},
    }


def run(args, progress) -> dict:
    from run import cores_busy, cpu_model, git_revision  # the report's machine facts

    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "busy_before": cores_busy(),
               "git": git_revision()}
    n_seeds = args.asha_seeds or (1 if args.quick else 3)
    trials = args.asha_trials or (3 if args.quick else 27)
    max_epochs = args.asha_max_epochs or (3 if args.quick else 9)
    db = _create_db("trainhub_bench_asha")
    queue = f"bench-asha-{uuid.uuid4().hex[:8]}"  # only this benchmark's worker consumes it
    broker = REDIS.rsplit("/", 1)[0] + "/13"
    tmp = Path(tempfile.mkdtemp(prefix="trainhub-bench-asha-"))
    env = {**os.environ, "TRAINHUB_DATABASE_URL": _pg_url(db), "TRAINHUB_REDIS_URL": REDIS,
           "TRAINHUB_BROKER_URL": broker, "TRAINHUB_QUEUE": queue,
           "TRAINHUB_DATA_DIR": str(tmp), "TRAINHUB_AUTH": "off", "PYTHONUNBUFFERED": "1"}
    api = worker = None
    log = open(tmp / "api.log", "wb")
    per_seed = []
    try:
        api, base = _start_api(env, log, tmp / "api.log")
        worker = _start_worker(env, tmp / "worker.log")
        timeout = 60 + trials * max_epochs * 20  # an epoch takes well under a second here
        with httpx.Client(base_url=base, timeout=60) as http:
            warm_up(http, progress)
            for seed in range(n_seeds):
                bodies = sweep_bodies(seed, trials, max_epochs)
                order = ["asha", "random"] if seed % 2 == 0 else ["random", "asha"]
                done = {name: run_sweep(http, bodies[name], progress, timeout)
                        for name in order}
                per_seed.append(compare(seed, done["asha"], done["random"], trials,
                                        max_epochs))
    finally:
        _stop(worker)
        _stop(api)
        log.close()
        _drop_db(db)
        _drop_queue(broker, queue)
        if len(per_seed) == n_seeds:
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # a failed run's evidence
            progress(f"the API's and the worker's logs are kept in {tmp}")
    raw = {"seeds": per_seed, "trials": trials, "max_epochs": max_epochs, "quick": args.quick,
           "space": SPACE, **machine,
           "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "medians": medians(per_seed)}
    return {"title": TITLE, "markdown": markdown(raw), "raw": raw, "summary": summary(raw)}


FIGURES = ("asha_best", "random_best", "gap_points", "asha_epochs", "random_epochs",
           "asha_seconds", "random_seconds")


def medians(per_seed: list[dict]) -> dict:
    out = {key: statistics.median(s[key] for s in per_seed) for key in FIGURES}
    out["wall_ratio"] = out["asha_seconds"] / out["random_seconds"]
    out["epochs_ratio"] = out["asha_epochs"] / out["random_epochs"]
    return out


def _met(raw: dict) -> bool:
    return round(raw["medians"]["gap_points"], 6) <= CLAIM_POINTS  # no float noise at the bound


def _row(label: str, s: dict) -> str:
    return (f"| {label} | {s['asha_best']:.2%} | {s['random_best']:.2%} | "
            f"{s['gap_points']:+.2f} | {s['asha_epochs']:g} | {s['random_epochs']:g} | "
            f"{s['asha_seconds']:.1f} s | {s['random_seconds']:.1f} s | "
            f"{s['asha_seconds'] / s['random_seconds']:.2f} |")


def markdown(raw: dict) -> str:
    m, seeds = raw["medians"], raw["seeds"]
    busy = "?" if raw["busy_before"] is None else f"{raw['busy_before']:.2f}"
    lines = [
        f"{raw['trials']} trials of lenet on digits (SGD; lr loguniform [1e-3, 0.3], "
        "momentum uniform [0.8, 0.99], batch_size choice [16, 32, 64]), one sweep of each "
        f"strategy per seed (seeds 0-{len(seeds) - 1}), on one worker process beside the API "
        f"process, on a {raw['cores']}-core machine ({raw['cpu']}; {busy} cores busy with "
        f"other work just before; {raw['date']}; git {raw['git']}), after "
        "one warm-up job; "
        "asha first for even seeds, random first for odd ones. asha: min_epochs 1, "
        f"reduction_factor 3, max_epochs {raw['max_epochs']}, max_concurrent 1; random: the "
        f"same seed and trials, each trained all {raw['max_epochs']} epochs (max_concurrent "
        "1). Trial n drew the same values in both sweeps (checked). Best: the sweep's "
        "`best.value` (eval_accuracy; asha's at the highest rung reached); gap: random's "
        "best minus asha's, in accuracy points; wall: the sweep's `created_at` (the POST) "
        "to its `finished_at`.", "",
        "| seed | asha best | random best | gap (points) | asha epochs | random epochs "
        "| asha wall | random wall | wall asha/random |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [_row(str(s["seed"]), s) for s in seeds]
    lines += [_row("**median**", m), "",
              "Synchronous successive halving would train 27×1 + 9×2 + 3×6 = 63 epochs (for "
              "27 trials, η 3); asynchronous ASHA promotes a trial as soon as it ranks in the "
              "top ⌊n/η⌋ of the n trials at its rung so far, and one promoted early can fall "
              "out of the top third later, so more trials can reach the upper rungs (the "
              "counts below) and it can train more epochs.", ""]
    lines += [f"Seed {s['seed']}: asha's rungs reached by {s['asha_rungs']} trials; its last "
              f"rung's trials {s['last_rung_trials']} scored as random's same trials in "
              f"{s['last_rung_equal']} of {len(s['last_rung_trials'])}; random's best (trial "
              f"{s['random_best_trial']}) {'did' if s['random_best_at_last_rung'] else 'did not'}"
              " reach asha's last rung." for s in seeds]
    verdict = "met" if _met(raw) else "NOT met"
    lines += ["", f"Claim (median over the seeds: asha's best within {CLAIM_POINTS:g} points "
              f"of random's): {verdict}: {m['gap_points']:+.2f} points. Epochs: "
              f"{m['asha_epochs']:g} against {m['random_epochs']:g} ({m['epochs_ratio']:.2f}); "
              f"wall time: {m['asha_seconds']:.1f} s against {m['random_seconds']:.1f} s "
              f"({m['wall_ratio']:.2f})."]
    return "\n".join(lines)


def summary(raw: dict) -> list[dict]:
    m = raw["medians"]
    return [{"key": "asha", "figure": f"Sweeps: asha vs random, {raw['trials']} trials "
             f"(median of {len(raw['seeds'])} seeds)",
             "trainhub": f"asha {m['asha_best']:.2%} in {m['asha_epochs']:g} epochs, "
                         f"{m['asha_seconds']:.1f} s",
             "reference": f"random {m['random_best']:.2%} in {m['random_epochs']:g} epochs, "
                          f"{m['random_seconds']:.1f} s",
             "target": f"asha's best within {CLAIM_POINTS:g} points", "met": _met(raw),
             "result": f"{m['gap_points']:+.2f} points, wall ×{m['wall_ratio']:.2f}"}]
