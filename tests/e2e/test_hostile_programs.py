"""Hostile torch.export archives sent to POST /models of the running stack, with the API
process's peak memory measured around each request (VmHWM, reset through
/proc/PID/clear_refs; tests/e2e/test_hostile_uploads.py's helpers): each is a 422 naming the
field and saying why, the API stays within 100 MB of where it was, nothing is left on disk
(the artifact store's programs/ nor the API's temporary folder) and no row is made; crafted
sample inputs are taken without ever being unpickled; the API answers normally after."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import httpx
import pytest

from tests import programs
from tests.e2e.test_hostile_uploads import api_memory
from tests.memory import MB
from tests.programs import export, marker_pickle, rewrite, save
from tests.unit.core.test_program_archive import CustomOpNet

pytestmark = pytest.mark.slow

ALLOWED_RISE = 100 * MB


@pytest.fixture(scope="module")
def warm(stack, tmp_path_factory):
    """One archive taken and deleted first: the API's first check imports torch's export
    deserialiser and sympy (about 170 MB, once per process), which is not a request's."""
    train, eval_ = programs.residual_pair(tmp_path_factory.mktemp("warm"))
    resp = upload(stack["base"], train, eval_)
    assert resp.status_code == 201, resp.text
    assert httpx.delete(f"{stack['base']}/models/{resp.json()['id']}").status_code == 204
    return stack


def zip_bomb(source: Path, target: Path, unpacked: int) -> Path:
    """The archive with an entry of `unpacked` zero bytes added (deflated: about 1 MB a GB)."""
    rewrite(source, target)
    with zipfile.ZipFile(target, "a", zipfile.ZIP_DEFLATED) as zf:
        root = zf.namelist()[0].split("/")[0]
        with zf.open(f"{root}/extra/bomb", "w", force_zip64=True) as entry:
            for _ in range(unpacked // 2**20):
                entry.write(bytes(2**20))
    return target


def stored(stack) -> list[str]:
    data = stack["tmp"] / "data"
    roots = (data / "artifacts" / "programs", data / "tmp")
    return sorted(str(p) for root in roots if root.exists() for p in root.rglob("*"))


def listed(base: str) -> set[str]:
    return {m["id"] for m in httpx.get(f"{base}/models").json()["models"]
            if m["source"] == "program"}


def upload(base: str, train: Path, eval_: Path | None = None) -> httpx.Response:
    files = {"file": (train.name, train.read_bytes())}
    if eval_ is not None:
        files["eval_file"] = (eval_.name, eval_.read_bytes())
    return httpx.post(f"{base}/models", files=files, timeout=300)


def hostile(case: str, folder: Path) -> Path:
    train, _eval = programs.residual_pair(folder)
    target = folder / f"{case.replace(' ', '-')}.pt2"
    if case == "pickle renamed":
        target.write_bytes(pickle.dumps(programs.LeavesMarker(folder / "ran")))
    elif case == "pickled weights":
        from torch import nn
        from torch.testing._internal.two_tensor import TwoTensor

        net = programs.PlainNet()
        weight = net.head.weight.detach()
        net.head.weight = nn.Parameter(TwoTensor(weight, weight))
        save(export(net, training=True), target)
    elif case == "custom op":
        save(export(CustomOpNet(), training=True), target)
    elif case == "5 GB weight":
        def grow(config):
            meta = config["config"]["head.weight"]["tensor_meta"]
            meta["sizes"], meta["strides"] = [{"as_int": 1_250_000_000}], [{"as_int": 1}]

        rewrite(train, target, weights=grow)
    elif case == "zip bomb":  # 2.5 GiB of zeros in a 2.5 MB file: over the 2 GiB budget
        zip_bomb(train, target, 2560 * 2**20)
    elif case == "truncated":
        target.write_bytes(train.read_bytes()[:train.stat().st_size // 2])
    return target


@pytest.mark.parametrize("case, words", [
    ("pickle renamed", "not a torch.export archive"),
    ("pickled weights", "use_pickle"),
    ("custom op", "trainhub_tests.double.default"),
    ("5 GB weight", "declares 5000"),
    ("zip bomb", "unpacks to"),
    ("truncated", "not a torch.export archive"),
])
def test_a_hostile_archive_is_a_422_within_100_mb_leaving_nothing(warm, tmp_path, case, words):
    stack = warm
    base = stack["base"]
    path = hostile(case, tmp_path)
    files, models = stored(stack), listed(base)

    with api_memory(stack) as memory:
        resp = upload(base, path)
    print(f"\n{case} ({path.stat().st_size / MB:.1f} MB): API {memory}")

    assert resp.status_code == 422, resp.text
    problem, = resp.json()["detail"]
    assert problem["field"] == "file" and words in problem["msg"], problem
    assert memory.rise < ALLOWED_RISE, str(memory)
    assert stored(stack) == files and listed(base) == models
    assert not (tmp_path / "ran").exists()


def test_crafted_sample_inputs_are_taken_and_never_run_and_the_api_still_answers(warm,
                                                                                 tmp_path):
    stack = warm
    base = stack["base"]
    marker = tmp_path / "ran"
    train, eval_ = programs.residual_pair(tmp_path)
    evil = rewrite(eval_, tmp_path / "evil.pt2",
                   replace={"data/sample_inputs/model.pt": marker_pickle(marker)})

    with api_memory(stack) as memory:
        resp = upload(base, train, evil)
    print(f"\ncrafted sample inputs: API {memory}")

    assert resp.status_code == 201, resp.text
    assert memory.rise < ALLOWED_RISE, str(memory)
    assert not marker.exists()
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    assert httpx.delete(f"{base}/models/{resp.json()['id']}").status_code == 204
