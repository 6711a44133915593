"""The checkpoint format (core/checkpoint_format.py, worker/checkpoints.build) without a database.

Checkpoints come from real fit() runs on tiny synthetic datasets: they must survive
torch.save + core.checkpoint_format.load (weights_only=True) with everything needed to resume
training (model, optimizer, scheduler, RNG) and to predict (architecture, normalisation,
classes). Loading must refuse anything that is not such a file without running its code.
"""
from __future__ import annotations

import io
import math
import os
import pickle
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace

import pytest
import torch

import models
from core import checkpoint_format as ckpt
from core.checkpoint_format import CheckpointError
from core.jobspec import Hyperparameters, JobSpec
from core.tensor_datasets import ImageDataset
from tests.unit.factories import one_torch_thread, synthetic_dataset
from worker.checkpointing import build
from worker.control import RunControl
from worker.loop import fit
from worker.recipe import make_optimizer, make_scheduler
from worker.state import EpochEnd

CPU = torch.device("cpu")
EPOCHS = 2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield
    trained.cache_clear()  # free the cached checkpoints (resnet18's are ~90 MB each)


# ---- helpers -------------------------------------------------------------------------------

def make_dataset(shape, n_train=12, n_test=6, num_classes=3, seed=0) -> ImageDataset:
    return synthetic_dataset(n_train, n_test, shape, num_classes, seed, class_prefix="class-")


@dataclass
class Trained:
    model_name: str
    dataset: ImageDataset
    spec: dict
    hp: Hyperparameters
    total_steps: int
    files: list[bytes]            # torch.save(build(end)) at each epoch end, as the writer does
    ends: list[EpochEnd]
    expected_rand: list[torch.Tensor]   # what torch.rand(8) gives right after each epoch end
    expected_perm: list[torch.Tensor]   # the next shuffle order after each epoch end
    model: torch.nn.Module        # live objects, in the state of the last checkpoint
    optimizer: torch.optim.Optimizer
    scheduler: object


# (model, optimizer, scheduler, validation_fraction): every optimizer x scheduler on lenet,
# the BatchNorm models on a few combinations (resnet18, 11M parameters, only once: the
# whole file has to stay fast on a 2-core machine).
CASES = ([("lenet", o, s, 0.0) for o in ("sgd", "adam", "adamw")
          for s in ("none", "step", "cosine", "onecycle")]
         + [("lenet", "sgd", "onecycle", 0.25),
            ("cnn", "sgd", "step", 0.0), ("cnn", "adam", "onecycle", 0.0),
            ("cnn", "adamw", "cosine", 0.0),
            ("resnet18", "sgd", "onecycle", 0.0)])
CASE_IDS = [f"{m}-{o}-{s}" + ("-val" if v else "") for m, o, s, v in CASES]
SHAPES = {"lenet": (1, 8, 8), "cnn": (1, 8, 8), "resnet18": (3, 8, 8)}


@lru_cache(maxsize=None)
def trained(model_name: str, optimizer: str, scheduler: str, val: float) -> Trained:
    shape = SHAPES[model_name]
    dataset = make_dataset(shape, n_train=16 if val else 12)
    spec = JobSpec(model=model_name, dataset="fake", device="cpu", hyperparameters={
        "epochs": EPOCHS, "batch_size": 4, "optimizer": optimizer, "scheduler": scheduler,
        "lr": 0.01, "weight_decay": 0.01 if optimizer != "adam" else 0.0, "log_every": 1,
        "seed": 3, "validation_fraction": val}).resolved()
    hp = Hyperparameters(**spec["hyperparameters"])
    torch.manual_seed(hp.seed)
    model = models.build(model_name, shape, len(dataset.classes))
    files, ends, rands, perms = [], [], [], []
    n_train = 12  # 16 * (1 - 0.25) or 12: every batch has 4 samples (BatchNorm needs > 1)

    def on_epoch_end(end: EpochEnd) -> None:
        buf = io.BytesIO()
        torch.save(build(end, spec, dataset), buf)  # serialised now: the model moves on
        files.append(buf.getvalue())
        ends.append(end)
        with torch.random.fork_rng(devices=[]):
            rands.append(torch.rand(8))
        g = torch.Generator()
        g.set_state(end.generator.get_state())
        perms.append(torch.randperm(n_train, generator=g))

    result = fit(model, dataset, hp, CPU, RunControl(on_epoch_end=on_epoch_end))
    assert result.epochs_completed == EPOCHS and len(files) == EPOCHS
    last = ends[-1]
    return Trained(model_name, dataset, spec, hp, result.step, files, ends, rands, perms,
                   last.model, last.optimizer, last.scheduler)


def assert_same(a, b, path="blob"):
    """Deep equality of state dicts: tensors bit-identical, containers and scalars equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b and type(a) is type(b), (path, a, b)


PLAIN = (str, int, float, bool, type(None))


def assert_plain(obj, path="blob"):
    """Only tensors and plain Python containers/scalars: what weights_only loading allows."""
    if isinstance(obj, torch.Tensor):
        return
    if isinstance(obj, dict):
        assert type(obj) is dict, path
        for k, v in obj.items():
            assert type(k) in (str, int), (path, k)
            assert_plain(v, f"{path}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        assert type(obj) in (list, tuple), path
        for i, v in enumerate(obj):
            assert_plain(v, f"{path}[{i}]")
    else:
        assert type(obj) in PLAIN, (path, type(obj))


def save_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# ---- round trip of real checkpoints --------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_checkpoint_round_trips_with_everything_to_resume_and_predict(case):
    t = trained(*case)
    model_name, optimizer_name, scheduler_name, val = case
    for epoch, (data, end) in enumerate(zip(t.files, t.ends), start=1):
        blob = ckpt.load(data)
        assert_plain(blob)
        assert blob["format"] == ckpt.FORMAT and blob["format_version"] == ckpt.FORMAT_VERSION
        assert blob["architecture"] == {"name": model_name,
                                        "input_shape": list(SHAPES[model_name]),
                                        "num_classes": 3}
        assert blob["normalization"] == {"mean": t.dataset.mean, "std": t.dataset.std}
        assert all(type(v) is float for v in blob["normalization"]["mean"]
                   + blob["normalization"]["std"])
        assert blob["classes"] == ["class-0", "class-1", "class-2"]
        assert blob["epoch"] == epoch and type(blob["epoch"]) is int
        assert blob["step"] == epoch * t.total_steps // EPOCHS and type(blob["step"]) is int
        assert blob["spec"] == t.spec
        assert blob["dataset"] == "synthetic"
        assert set(blob["metrics"]) >= {"train_loss", "train_accuracy", "eval_loss",
                                        "eval_accuracy", "lr"}
        if val:
            assert "val_accuracy" in blob["metrics"]
        assert all(type(v) is float for v in blob["metrics"].values())
        assert blob["metrics"] == end.metrics
        assert set(blob["model_state"]) == set(t.model.state_dict())
        assert all(v.device.type == "cpu" for v in blob["model_state"].values())
        if scheduler_name == "none":
            assert blob["scheduler_state"] is None
        else:
            assert isinstance(blob["scheduler_state"], dict)

    # the last checkpoint is the state the live objects ended in
    blob = ckpt.load(t.files[-1])
    assert_same(blob["model_state"], t.model.state_dict(), "model_state")
    assert_same(blob["optimizer_state"], t.optimizer.state_dict(), "optimizer_state")
    if t.scheduler is not None:
        assert_same(blob["scheduler_state"], t.scheduler.state_dict(), "scheduler_state")


RESUME = [(c, i) for c, i in zip(CASES, CASE_IDS) if c[0] != "resnet18"]


@pytest.mark.parametrize("case", [c for c, _ in RESUME], ids=[i for _, i in RESUME])
def test_training_resumed_from_a_checkpoint_continues_exactly(case):
    """Fresh model + optimizer + scheduler loaded from the file take the same next step."""
    t = trained.__wrapped__(*case)  # a private run: its live objects get trained further
    blob = ckpt.load(t.files[-1])
    arch = blob["architecture"]
    model = models.build(arch["name"], tuple(arch["input_shape"]), arch["num_classes"])
    model.load_state_dict(blob["model_state"])
    # PyTorch's resume order: build optimizer and scheduler, then load both states (a
    # scheduler's constructor sets the optimizer's lr, so it must come before the load)
    optimizer = make_optimizer(model, t.hp)
    scheduler, _ = make_scheduler(optimizer, t.hp, t.total_steps)
    optimizer.load_state_dict(blob["optimizer_state"])
    if blob["scheduler_state"] is None:
        assert scheduler is None and t.scheduler is None
    else:
        scheduler.load_state_dict(blob["scheduler_state"])
        assert scheduler.get_last_lr() == t.scheduler.get_last_lr()
        assert_same(scheduler.state_dict(), t.scheduler.state_dict(), "scheduler_state")
    assert_same(optimizer.state_dict(), t.optimizer.state_dict(), "optimizer_state")
    assert optimizer.param_groups[0]["lr"] == t.optimizer.param_groups[0]["lr"]

    # one more identical training step on both: momentum / Adam moments must match
    # (a OneCycleLR that has run its total steps cannot step again: compare without it)
    x = torch.randn(4, *SHAPES[t.model_name], generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0])
    outputs = []
    for m, opt in ((t.model, t.optimizer), (model, optimizer)):
        m.train()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        m.eval()
        with torch.no_grad():
            outputs.append(m(x))
    assert_same(model.state_dict(), t.model.state_dict(), "model_state after a step")
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("case", [CASES[0], CASES[13], CASES[-1]],
                         ids=[CASE_IDS[0], CASE_IDS[13], CASE_IDS[-1]])
def test_rng_state_restores_torch_and_the_shuffle_order(case):
    t = trained(*case)
    for data, expected_rand, expected_perm in zip(t.files, t.expected_rand, t.expected_perm):
        rng = ckpt.load(data)["rng_state"]
        assert set(rng) >= {"torch", "shuffle"}
        assert rng["torch"].dtype == torch.uint8 and rng["shuffle"].dtype == torch.uint8
        saved = torch.get_rng_state()
        try:
            torch.rand(100)  # move the global RNG elsewhere first
            torch.set_rng_state(rng["torch"])
            assert torch.equal(torch.rand(8), expected_rand)
            torch.set_rng_state(rng["torch"])
            assert torch.equal(torch.rand(8), expected_rand)
        finally:
            torch.set_rng_state(saved)
        g = torch.Generator()
        g.set_state(rng["shuffle"])
        assert torch.equal(torch.randperm(len(expected_perm), generator=g), expected_perm)
    # the two epochs left the RNGs in different states
    assert not torch.equal(t.expected_perm[0], t.expected_perm[1])


@pytest.mark.parametrize("case", [c for c in CASES if c[2] in ("none", "onecycle")],
                         ids=[i for c, i in zip(CASES, CASE_IDS) if c[2] in ("none", "onecycle")])
def test_model_rebuilt_from_the_checkpoint_gives_identical_outputs(case):
    t = trained(*case)
    blob = ckpt.load(t.files[-1])
    arch = blob["architecture"]
    rebuilt = models.build(arch["name"], tuple(arch["input_shape"]), arch["num_classes"])
    rebuilt.load_state_dict(blob["model_state"], strict=True)
    original = models.build(t.model_name, SHAPES[t.model_name], 3)
    original.load_state_dict(t.model.state_dict())
    rebuilt.eval(), original.eval()
    x = torch.randn(5, *arch["input_shape"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), original(x))
        assert torch.equal(rebuilt(x[:1]), original(x[:1]))


def test_load_accepts_bytes_a_path_and_a_file_object(tmp_path):
    data = trained(*CASES[0]).files[-1]
    path = tmp_path / "c.pt"
    path.write_bytes(data)
    blobs = [ckpt.load(data), ckpt.load(str(path))]
    with open(path, "rb") as f:
        blobs.append(ckpt.load(f))
    for blob in blobs[1:]:
        assert_same(blob, blobs[0])


# ---- safe loading ----------------------------------------------------------------------------

class Evil:
    """Unpickling this creates (truncates) the marker file through builtins.open."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class EvilSystem:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_the_evil_payload_really_runs_code_when_unpickled_unsafely(tmp_path):
    """Control: the payloads below are live, so their refusal means something."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(Evil(str(marker)))).close()
    assert marker.exists()


@pytest.mark.parametrize("payload", [Evil, EvilSystem])
@pytest.mark.parametrize("container", ["pickle", "torch.save", "inside-a-checkpoint"])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, payload,
                                                                  container):
    marker = tmp_path / "pwned"
    evil = payload(str(marker))
    if container == "pickle":
        data = pickle.dumps(evil, protocol=2)  # torch.load expects protocol 2
    elif container == "torch.save":
        data = save_bytes(evil)
    else:  # a well-formed checkpoint dict with one poisoned entry
        blob = ckpt.load(trained(*CASES[0]).files[-1])
        blob["spec"] = {"x": evil}
        data = save_bytes(blob)
    assert not marker.exists()
    path = tmp_path / "evil.pt"
    path.write_bytes(data)
    for source in (data, str(path)):
        with pytest.raises(CheckpointError) as info:
            ckpt.load(source)
        assert "refused" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("data", [
    b"",
    os.urandom(64),
    bytes(range(256)) * 10,
    b"PK\x03\x04" + os.urandom(200),  # looks like a zip, is not one
], ids=["empty", "random-64", "bytes-2560", "fake-zip"])
def test_garbage_is_a_checkpoint_error(data, tmp_path):
    with pytest.raises(CheckpointError):
        ckpt.load(data)
    path = tmp_path / "x.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError):
        ckpt.load(str(path))


def test_empty_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "empty.pt"
    path.touch()
    with pytest.raises(CheckpointError):
        ckpt.load(str(path))


def test_truncated_checkpoint_is_a_checkpoint_error():
    data = trained(*CASES[0]).files[-1]
    for cut in (len(data) // 2, len(data) - 30, 100):
        with pytest.raises(CheckpointError):
            ckpt.load(data[:cut])


@pytest.mark.parametrize("obj", [
    {"model_state": {"w": torch.zeros(2)}, "epoch": 1},
    {"format": "something.else", "format_version": 1},
    [1, 2, 3],
    torch.zeros(3),
    "trainhub.checkpoint",
], ids=["dict-without-format", "other-format", "list", "tensor", "string"])
def test_a_valid_torch_file_that_is_not_a_checkpoint(obj):
    with pytest.raises(CheckpointError, match="not a trainhub checkpoint"):
        ckpt.load(save_bytes(obj))


@pytest.mark.parametrize("missing", ckpt.REQUIRED[1:])
def test_a_checkpoint_missing_a_required_key_names_it(missing):
    blob = ckpt.load(trained(*CASES[0]).files[-1])
    del blob[missing]
    with pytest.raises(CheckpointError, match=f"lacks.*{missing}"):
        ckpt.load(save_bytes(blob))


def test_a_checkpoint_missing_classes_names_classes():
    blob = ckpt.load(trained(*CASES[0]).files[-1])
    del blob["classes"]
    with pytest.raises(CheckpointError) as info:
        ckpt.load(save_bytes(blob))
    assert "classes" in str(info.value)


def test_a_newer_format_version_is_refused_and_the_current_one_loads():
    blob = ckpt.load(trained(*CASES[0]).files[-1])
    blob["format_version"] = ckpt.FORMAT_VERSION + 1
    with pytest.raises(CheckpointError, match="newer"):
        ckpt.load(save_bytes(blob))
    blob["format_version"] = ckpt.FORMAT_VERSION
    assert ckpt.load(save_bytes(blob))["format_version"] == ckpt.FORMAT_VERSION


# ---- best, latest and references -------------------------------------------------------------

def row(epoch, metrics, id=None):
    return SimpleNamespace(id=id or f"row-{epoch}", epoch=epoch, metrics=metrics,
                           job_id="job")


def spec_with(validation_fraction=0.0):
    return {"hyperparameters": {"validation_fraction": validation_fraction}}


class FakeSession:
    """resolve() asks for the job's rows newest first; answer like the database would."""

    def __init__(self, rows):
        self.rows, self.statements = rows, []

    def scalars(self, statement):
        self.statements.append(statement)
        return iter(sorted(self.rows, key=lambda r: r.epoch, reverse=True))


def test_best_metric_name():
    assert ckpt.best_metric_name(spec_with(0.0)) == "eval_accuracy"
    assert ckpt.best_metric_name({"hyperparameters": {}}) == "eval_accuracy"
    assert ckpt.best_metric_name(spec_with(0.1)) == "val_accuracy"


def test_select_best_by_the_metric():
    rows = [row(1, {"eval_accuracy": 0.5, "val_accuracy": 0.9}),
            row(2, {"eval_accuracy": 0.8, "val_accuracy": 0.4}),
            row(3, {"eval_accuracy": 0.7, "val_accuracy": 0.6})]
    assert ckpt.select_best(rows, "eval_accuracy").epoch == 2
    assert ckpt.select_best(rows, "val_accuracy").epoch == 1
    assert ckpt.select_best(list(reversed(rows)), "eval_accuracy").epoch == 2


def test_select_best_ties_go_to_the_earlier_epoch_in_any_order():
    rows = [row(1, {"eval_accuracy": 0.5}), row(2, {"eval_accuracy": 0.9}),
            row(3, {"eval_accuracy": 0.9}), row(4, {"eval_accuracy": 0.9})]
    for order in (rows, rows[::-1], [rows[2], rows[3], rows[1], rows[0]]):
        assert ckpt.select_best(order, "eval_accuracy").epoch == 2


def test_select_best_ignores_rows_without_the_metric():
    rows = [row(1, None), row(2, {}), row(3, {"eval_accuracy": None}),
            row(4, {"eval_accuracy": "0.99"}), row(5, {"train_loss": 0.1}),
            row(6, {"eval_accuracy": 0.3})]
    assert ckpt.select_best(rows, "eval_accuracy").epoch == 6
    assert ckpt.select_best(rows[:5], "eval_accuracy") is None
    assert ckpt.select_best([], "eval_accuracy") is None
    assert ckpt.select_best([row(1, {"eval_accuracy": 1})], "eval_accuracy").epoch == 1


def test_resolve_latest_best_and_epochs():
    rows = [row(1, {"eval_accuracy": 0.5, "val_accuracy": 0.9}),
            row(2, {"eval_accuracy": 0.8, "val_accuracy": 0.4}),
            row(3, {"eval_accuracy": 0.7, "val_accuracy": 0.9})]
    session = FakeSession(rows)
    assert ckpt.resolve(session, "job", spec_with(), "latest").epoch == 3
    assert ckpt.resolve(session, "job", spec_with(), "best").epoch == 2
    # on validation: epochs 1 and 3 tie, the earlier wins
    assert ckpt.resolve(session, "job", spec_with(0.2), "best").epoch == 1
    assert ckpt.resolve(session, "job", spec_with(), "2").epoch == 2
    assert ckpt.resolve(session, "job", spec_with(), "0002").epoch == 2
    assert ckpt.resolve(session, "job", spec_with(), "7") is None
    assert ckpt.resolve(session, "job", spec_with(), "0") is None
    assert session.statements  # it asked the database


def test_resolve_best_falls_back_to_latest_without_the_metric():
    rows = [row(1, {"train_loss": 1.0}), row(2, None)]
    assert ckpt.resolve(FakeSession(rows), "job", spec_with(), "best").epoch == 2
    # validation requested but the rows only know eval_accuracy: still latest
    rows = [row(1, {"eval_accuracy": 0.9}), row(2, {"eval_accuracy": 0.1})]
    assert ckpt.resolve(FakeSession(rows), "job", spec_with(0.2), "best").epoch == 2


def test_resolve_without_checkpoints_is_none():
    for ref in ("latest", "best", "1"):
        assert ckpt.resolve(FakeSession([]), "job", spec_with(), ref) is None


@pytest.mark.parametrize("ref", ["latest", "best", "0", "1", "12", "000001", "999999"])
def test_ref_pattern_accepts(ref):
    assert ckpt.REF_PATTERN.match(ref)
    assert ckpt.REF_PATTERN.fullmatch(ref)


@pytest.mark.parametrize("ref", ["../x", "", "1.5", "LATEST", "Best", "-1", "1234567",
                                 " best", "best ", "latest/..", "1e3", "best1", "٣"])
def test_ref_pattern_rejects(ref):
    assert not ckpt.REF_PATTERN.match(ref)


@pytest.mark.parametrize("ref", ["best\n", "latest\n", "3\n", "\n"])
def test_ref_pattern_rejects_a_trailing_newline(ref):
    """'$' would also match before a final newline; then int('best\\n') raised in resolve()."""
    assert not ckpt.REF_PATTERN.match(ref)


# ---- architecture compatibility --------------------------------------------------------------

BASE = {"name": "lenet", "input_shape": [1, 28, 28], "num_classes": 10}


def test_architecture_mismatch_none_for_identical():
    assert ckpt.architecture_mismatch(BASE, dict(BASE)) is None
    # a tuple input shape (as the job builds it) equals the checkpoint's list
    assert ckpt.architecture_mismatch(BASE, {**BASE, "input_shape": (1, 28, 28)}) is None


@pytest.mark.parametrize("change, label", [
    ({"name": "cnn"}, "model"),
    ({"input_shape": [3, 28, 28]}, "input shape"),
    ({"input_shape": [1, 32, 32]}, "input shape"),
    ({"input_shape": (1, 28)}, "input shape"),
    ({"num_classes": 100}, "number of classes"),
])
def test_architecture_mismatch_names_the_difference(change, label):
    target = {**BASE, **change}
    for source, other in ((BASE, target), (target, BASE)):
        message = ckpt.architecture_mismatch(source, other)
        assert message is not None and label in message
        (key, value), = {k: v for k, v in other.items() if source[k] != v}.items()
        assert repr(source[key]) in message and repr(value) in message


def test_architecture_mismatch_reports_the_model_first():
    message = ckpt.architecture_mismatch(BASE, {"name": "mlp", "input_shape": [3, 32, 32],
                                                "num_classes": 2})
    assert message.startswith("model")
