"""`trainhub datasets upload|list|show`: a multipart body streamed from a generator that
advances the upload bar, the API's refusals as one line."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from cli.datasets import Multipart
from tests.integration.cli.conftest import assert_one_error_line


def write_npz(path, n_train: int = 40, n_test: int = 10) -> None:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, 8, 8), dtype=np.uint8),
             y_train=np.arange(n_train) % 2, x_test=rng.integers(0, 256, (n_test, 8, 8),
                                                                dtype=np.uint8),
             y_test=np.arange(n_test) % 2, classes=np.array(["even", "odd"]))


def test_the_body_is_generated_chunk_by_chunk_and_parses_as_multipart(tmp_path):
    from python_multipart import MultipartParser  # what the API parses uploads with

    path = tmp_path / 'odd "name".bin'
    payload = bytes(range(256)) * 40
    path.write_bytes(payload)
    advanced: list[int] = []
    body = Multipart({"name": "x", "test_fraction": "0.2"}, "file", path,
                     on_chunk=advanced.append, chunk=1000)
    chunks = list(body)
    assert advanced == [1000] * 10 + [240] and sum(advanced) == len(payload)
    assert sum(map(len, chunks)) == len(body)
    parts: dict[str, bytes] = {}
    current: dict = {}

    def on_part_begin():
        current.clear()
        current["data"] = io.BytesIO()

    def on_header_value(data, start, end):
        current.setdefault("headers", []).append(data[start:end])

    def on_part_data(data, start, end):
        current["data"].write(data[start:end])

    def on_part_end():
        disposition = current["headers"][0].decode()
        name = disposition.split('name="')[1].split('"')[0]
        parts[name] = current["data"].getvalue()
        if name == "file":
            assert 'filename="odd %22name%22.bin"' in disposition

    parser = MultipartParser(body.boundary, {
        "on_part_begin": on_part_begin, "on_header_value": on_header_value,
        "on_part_data": on_part_data, "on_part_end": on_part_end})
    for chunk in chunks:
        parser.write(chunk)
    assert parts == {"name": b"x", "test_fraction": b"0.2", "file": payload}


def test_upload_an_npz_then_list_and_show_it(cli, tmp_path):
    # No worker here: --no-wait returns once the API has accepted it (202, processing);
    # tests/e2e/test_cli.py waits for a worker to make one ready.
    path = tmp_path / "pairs.npz"
    write_npz(path)
    run = cli("datasets", "upload", str(path), "--name", "pairs-cli", "--no-wait")
    assert run.exit_code == 0, run.stderr
    dataset_id = run.lines[-1]
    assert len(dataset_id) == 32
    assert "dataset pairs-cli is processing (a worker decodes it" in run.stderr
    listing = cli("datasets", "list").stdout
    assert dataset_id in listing and "pairs-cli" in listing and "digits" in listing
    shown = cli("datasets", "show", dataset_id).stdout
    assert "processing" in shown and "pairs-cli" in shown
    job = cli("submit", "--model", "mlp", "--dataset", dataset_id)
    assert_one_error_line(job, f"error: 422 dataset: dataset {dataset_id} is processing")


@pytest.mark.parametrize("channels", [1, 3])
def test_channels_reach_the_api_as_the_number(cli, tmp_path, channels):
    path = tmp_path / "pairs.npz"
    write_npz(path)
    run = cli("datasets", "upload", str(path), "--channels", str(channels), "--no-wait")
    assert run.exit_code == 0, run.stderr
    shown = json.loads(cli("datasets", "show", run.lines[-1], "--json").stdout)
    assert shown["options"]["channels"] == channels


def test_channels_other_than_1_or_3_are_the_apis_422(cli, tmp_path):
    path = tmp_path / "pairs.npz"
    write_npz(path)
    assert_one_error_line(cli("datasets", "upload", str(path), "--channels", "2"),
                          "error: 422 channels: Input should be 1 or 3")


def test_a_rejected_upload_is_one_line(cli, tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    line = assert_one_error_line(cli("datasets", "upload", str(bad)))
    assert line.startswith("error: 422 ") and "dataset rejected: " in line


@pytest.mark.parametrize("flags,field", [(["--test-fraction", "0.9"], "test_fraction"),
                                         (["--resize", "big"], "resize")])
def test_a_bad_form_field_is_the_apis_422(cli, tmp_path, flags, field):
    path = tmp_path / "pairs.npz"
    write_npz(path)
    line = assert_one_error_line(cli("datasets", "upload", str(path), *flags))
    assert line.startswith(f"error: 422 {field}: ")


def test_a_missing_file_or_dataset_is_one_line(cli, tmp_path):
    assert_one_error_line(cli("datasets", "upload", str(tmp_path / "none.npz")),
                          f"error: cannot read {tmp_path / 'none.npz'}: No such file or "
                          "directory")
    assert_one_error_line(cli("datasets", "upload", str(tmp_path)),
                          f"error: cannot read {tmp_path}: not a file")
    assert_one_error_line(cli("datasets", "show", "imagenet"),
                          "error: 404 dataset 'imagenet' not found")
