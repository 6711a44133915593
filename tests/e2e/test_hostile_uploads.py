"""Small uploads that decode to gigabytes (issue 19) against the running stack, with the API
process's peak memory measured around each request (VmHWM, reset through
/proc/PID/clear_refs): refused or processed, the API stays within 300 MB of where it was,
a refused upload leaves nothing on disk, and the API answers normally afterwards. Uploads
the API cannot judge from their headers (a .tar.gz) reach the worker, which refuses them
the same way, before their memory is spent."""
from __future__ import annotations

import io
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.images import zeros_npz, zeros_png
from tests.memory import MB, Peak
from tests.procs import wait_status, wait_until
from tests.unit.factories import npz_bytes, write_tar

# Needs real processes: the peak memory of the API (and worker) processes, read from /proc.
pytestmark = pytest.mark.slow

ALLOWED_RISE = 300 * MB


def gray_png(value: int, size: int = 8) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((size, size), value, np.uint8)).save(out, "PNG")
    return out.getvalue()


SIX_PNGS = {f"{cls}/{i}.png": gray_png(40 * i + k) for k, cls in enumerate(("cat", "dog"))
            for i in range(3)}


def upload(base: str, data: bytes, filename: str, **fields) -> httpx.Response:
    return httpx.post(f"{base}/datasets", files={"file": (filename, data)},
                      data={k: str(v) for k, v in fields.items()}, timeout=120)


def stored(stack) -> set[str]:
    folder = stack["tmp"] / "data" / "artifacts" / "datasets"
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def upload_ids(base: str) -> set[str]:
    return {d["id"] for d in httpx.get(f"{base}/datasets").json()["datasets"]
            if d["source"] == "upload"}


def assert_healthy(base: str) -> None:
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    resp = upload(base, npz_bytes(), "fine.npz")
    assert resp.status_code == 202, resp.text
    done = wait_until(lambda: (d := httpx.get(f"{base}/datasets/{resp.json()['id']}").json())
                      ["status"] != "processing" and d, timeout=120)
    assert done["status"] == "ready", done  # and the worker still takes uploads
    assert httpx.delete(f"{base}/datasets/{done['id']}").status_code == 204


def api_memory(stack) -> Peak:
    return Peak(stack["api"].popen.pid)


def test_a_1_mb_npz_holding_1_gb_of_zeros_is_refused_from_its_headers(stack, tmp_path):
    base = stack["base"]
    path = tmp_path / "zeros.npz"
    zeros_npz(path)  # x_train: uint8 zeros of shape (1000, 1, 1000, 1000)
    assert path.stat().st_size < 1_000_000
    files, datasets = stored(stack), upload_ids(base)

    with api_memory(stack) as memory:
        resp = upload(base, path.read_bytes(), "zeros.npz")
    print(f"\n1 GB .npz: API {memory}")

    assert resp.status_code == 422, resp.text
    problem, = resp.json()["detail"]
    assert problem["field"] == "file"
    assert "TRAINHUB_DATASET_MAX_DECODED_BYTES" in problem["msg"], problem
    assert memory.rise < ALLOWED_RISE, str(memory)
    assert stored(stack) == files and upload_ids(base) == datasets
    assert_healthy(base)


def test_six_tiny_pngs_resized_to_9999x9999_are_refused_at_once_from_a_zip(stack):
    base = stack["base"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in SIX_PNGS.items():
            zf.writestr(name, data)
    assert len(archive.getvalue()) < 2000
    files, datasets = stored(stack), upload_ids(base)

    with api_memory(stack) as memory:
        resp = upload(base, archive.getvalue(), "six.zip", resize="9999x9999")
    print(f"\nsix PNGs to 9999x9999 (.zip): API {memory}")

    assert resp.status_code == 422, resp.text
    problem, = resp.json()["detail"]
    assert problem["field"] == "file" and "6 images of 1x9999x9999" in problem["msg"], problem
    assert memory.rise < ALLOWED_RISE, str(memory)
    assert stored(stack) == files and upload_ids(base) == datasets
    assert_healthy(base)


def worker_processes(stack) -> list[int]:
    """The worker's main process and its pool processes (a task runs in one of those)."""
    main = stack["worker"].popen.pid
    children = open(f"/proc/{main}/task/{main}/children").read().split()
    return [main, *map(int, children)]


def test_the_same_in_a_tar_gz_is_refused_by_the_worker_before_it_decodes(stack, tmp_path):
    # A tar's entries are not walked by the API (that means decompressing all of it): it
    # accepts the upload, and the worker refuses it within its budget.
    base = stack["base"]
    data = write_tar(tmp_path / "six.tar.gz", SIX_PNGS, "w:gz").read_bytes()
    files = stored(stack)
    workers = [Peak(pid) for pid in worker_processes(stack)]
    for peak in workers:
        peak.__enter__()

    with api_memory(stack) as memory:
        resp = upload(base, data, "six.tar.gz", resize="9999x9999")
        assert resp.status_code == 202, resp.text
        ds = wait_until(lambda: (d := httpx.get(f"{base}/datasets/{resp.json()['id']}")
                                 .json())["status"] != "processing" and d, timeout=120)
    for peak in workers:
        peak.__exit__()
    print(f"\nsix PNGs to 9999x9999 (.tar.gz): API {memory}; worker processes "
          + "; ".join(map(str, workers)))

    assert ds["status"] == "failed", ds
    assert "TRAINHUB_DATASET_MAX_DECODED_BYTES" in ds["error"] and "1x9999x9999" in ds["error"]
    assert memory.rise < ALLOWED_RISE, str(memory)
    assert all(peak.rise < ALLOWED_RISE for peak in workers), [str(p) for p in workers]
    assert stored(stack) == files  # the failed row keeps the reason, the store nothing
    assert_healthy(base)
    assert httpx.delete(f"{base}/datasets/{ds['id']}").status_code == 204


@pytest.fixture(scope="module")
def digits_job(stack) -> str:
    resp = httpx.post(f"{stack['base']}/jobs", timeout=30, json={
        "model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": 1, "batch_size": 32}})
    assert resp.status_code == 201, resp.text
    done = wait_status(stack["base"], resp.json()["id"], timeout=240)
    assert done["status"] == "succeeded", done
    return done["id"]


def predict(base: str, job_id: str, pngs: list[bytes]) -> httpx.Response:
    files = [("image", (f"{i}.png", data, "image/png")) for i, data in enumerate(pngs)]
    return httpx.post(f"{base}/predict", data={"job_id": job_id, "top_k": "1"}, files=files,
                      timeout=120)


def test_predict_refuses_eight_8000x8000_pngs_by_their_headers(stack, digits_job):
    base = stack["base"]
    small = zeros_png(8, 8, rgb=False)
    assert predict(base, digits_job, [small]).status_code == 200  # the model is loaded
    big = zeros_png(8000, 8000)  # about 190 kB; 64 Mpx, as many as one image may have
    assert len(big) < 250_000

    with api_memory(stack) as memory:
        resp = predict(base, digits_job, [big] * 8)
    print(f"\n/predict, 8 x 8000x8000: API {memory}")

    assert resp.status_code == 413, resp.text
    detail = resp.json()["detail"]
    assert "image" in detail and "TRAINHUB_PREDICT_MAX_REQUEST_PIXELS" in detail
    assert "512000000 pixels" in detail, detail
    assert memory.rise < ALLOWED_RISE, str(memory)
    assert predict(base, digits_job, [small]).status_code == 200


def test_predict_decodes_one_image_at_a_time_and_gives_the_memory_back(stack, digits_job):
    base = stack["base"]
    small = zeros_png(8, 8, rgb=False)
    assert predict(base, digits_job, [small]).status_code == 200
    # Four 4000x4000 RGB photos: 64 Mpx, the request's whole allowance. Pillow holds an RGB
    # image in 4 bytes a pixel: 64 MB each, 256 MB if they were all decoded at once.
    photos = [zeros_png(4000, 4000)] * 4

    with api_memory(stack) as memory:
        resp = predict(base, digits_job, photos)
    print(f"\n/predict, 4 x 4000x4000: API {memory}")

    assert resp.status_code == 200, resp.text
    assert len(resp.json()["predictions"]) == 4
    assert memory.rise < 160 * MB, str(memory)
    assert memory.after < memory.before + 64 * MB, str(memory)
