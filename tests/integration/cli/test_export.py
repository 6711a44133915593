"""`trainhub export` against the real route (uvicorn in this process, the export tests'
job): the file the API serves, under the server's name or -o, a job named by the start of
its id; every error one line."""
from __future__ import annotations

import hashlib

import httpx

from cli import output
from tests.integration.api.test_export import base, job  # noqa: F401 - fixtures
from tests.integration.cli.conftest import assert_one_error_line, invoke
from tests.unit.api.test_predictor import checkpoint_blobs  # noqa: F401 - a fixture


def test_export_writes_what_the_api_serves(base, job, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    run = invoke("export", job[:12], "--format", "onnx", "--checkpoint", "latest",
                 "--url", base)
    assert run.exit_code == 0, run.stderr
    served = httpx.get(f"{base}/jobs/{job}/export", params={"format": "onnx",
                                                             "checkpoint": "latest"},
                       timeout=300).content
    target = tmp_path / "lenet-on-n-code-digits-epoch2.onnx"  # the server's name
    assert target.read_bytes() == served
    digest = hashlib.sha256(served).hexdigest()
    assert run.lines[-1].startswith(f"saved {target.name} (onnx, epoch 2, ")
    assert run.lines[-1].endswith(f", sha256 {digest})")

    out = tmp_path / "deploy" / "model.pt2"
    out.parent.mkdir()
    run = invoke("export", job, "-o", str(out), "--url", base)
    assert run.exit_code == 0, run.stderr
    assert out.read_bytes()[:2] == b"PK"  # a torch.export archive is a zip
    assert run.lines[-1].startswith(f"saved {out} (pt2, epoch 1, ")  # best


def test_export_errors_are_one_line_and_leave_no_file(base, job, tmp_path):  # noqa: F811
    target = tmp_path / "x.pt2"
    assert "expected best, latest or an epoch" in assert_one_error_line(
        invoke("export", job, "-c", "../etc", "-o", str(target), "--url", base))
    assert_one_error_line(invoke("export", job, "-c", "9", "-o", str(target), "--url", base),
                          f"error: 404 job {job} has no checkpoint '9'")
    assert_one_error_line(invoke("export", "f" * 32, "-o", str(target), "--url", base),
                          f"error: 404 job '{'f' * 32}' not found")
    assert invoke("export", job, "--format", "zip", "--url", base).exit_code == 2
    assert not list(tmp_path.iterdir())


def test_download_streams_a_checkpoint_through_the_same_fetch(base, job, tmp_path):  # noqa: F811
    target = tmp_path / "ckpt.pt"
    run = invoke("download", job[:12], "-c", "2", "-o", str(target), "--url", base)
    assert run.exit_code == 0, run.stderr
    served = httpx.get(f"{base}/jobs/{job}/checkpoints/2", timeout=60)
    assert target.read_bytes() == served.content
    assert run.lines[-1] == (f"saved {target} (epoch 2, {output.size(len(served.content))}, "
                             f"sha256 {served.headers['x-checkpoint-sha256']})")
