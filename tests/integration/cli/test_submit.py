"""`trainhub submit`: flags, --set, JSON and YAML files (flags win), the id on the last line,
and every refusal as one error line."""
from __future__ import annotations

import json

import pytest
import yaml

from tests.integration.cli.conftest import assert_one_error_line


def submitted(run, http) -> dict:
    assert run.exit_code == 0, run.stderr
    job_id = run.lines[-1]
    assert len(job_id) == 32 and set(job_id) <= set("0123456789abcdef"), run.stdout
    return http.get(f"/jobs/{job_id}").json()


def test_flags_make_the_job_and_the_id_is_alone_on_the_last_line(cli, http):
    run = cli("submit", "--model", "mlp", "--dataset", "digits", "--epochs", "3",
              "--batch-size", "16", "--lr", "0.01", "--optimizer", "adam", "--log-every", "20",
              "--seed", "7", "--name", "flags", "--device", "cpu")
    job = submitted(run, http)
    assert job["status"] == "queued" and job["name"] == "flags"
    assert job["spec"]["device"] == "cpu"
    hp = job["spec"]["hyperparameters"]
    assert (hp["epochs"], hp["batch_size"], hp["lr"], hp["optimizer"], hp["log_every"],
            hp["seed"]) == (3, 16, 0.01, "adam", 20, 7)
    assert "submitted flags: mlp on digits" in run.stderr


def test_set_takes_any_hyperparameter_with_its_type(cli, http):
    run = cli("submit", "--model", "lenet", "--dataset", "digits", "--set", "momentum=0.5",
              "--set", "nesterov=true", "--set", "scheduler=cosine", "--set", "lr=1e-3",
              "--set", "max_runtime_seconds=600")
    job = submitted(run, http)
    hp = job["spec"]["hyperparameters"]
    assert (hp["momentum"], hp["nesterov"], hp["scheduler"], hp["lr"]) == (
        0.5, True, "cosine", 0.001)
    assert job["spec"]["max_runtime_seconds"] == 600


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_a_file_is_the_body_and_flags_override_it(cli, http, tmp_path, suffix):
    spec = {"model": "cnn", "dataset": "digits", "name": "from-file",
            "hyperparameters": {"epochs": 5, "batch_size": 8, "scheduler": "step"}}
    path = tmp_path / f"job.{suffix}"
    path.write_text(yaml.safe_dump(spec) if suffix == "yaml" else json.dumps(spec))
    job = submitted(cli("submit", str(path), "--epochs", "2", "--set", "batch_size=32",
                        "--name", "overridden"), http)
    assert (job["model"], job["name"]) == ("cnn", "overridden")
    hp = job["spec"]["hyperparameters"]
    assert (hp["epochs"], hp["batch_size"], hp["scheduler"]) == (2, 32, "step")


def test_an_invalid_field_is_the_apis_422_in_one_line(cli):
    run = cli("submit", "--model", "mlp", "--dataset", "digits", "--lr", "0")
    assert_one_error_line(run, "error: 422 hyperparameters.lr: Input should be greater than 0")
    assert run.stdout == ""


def test_several_invalid_fields_share_the_line(cli):
    line = assert_one_error_line(cli("submit", "--model", "vgg", "--dataset", "digits",
                                     "--epochs", "0"))
    assert line.startswith("error: 422 ")
    assert "model: " in line and "unknown model 'vgg'" in line
    assert "; hyperparameters.epochs: " in line


def test_an_upload_id_that_does_not_exist_is_refused(cli):
    line = assert_one_error_line(cli("submit", "--model", "mlp", "--dataset", "0" * 32))
    assert line.startswith("error: 422 dataset: ")


def test_a_missing_model_is_the_apis_field_required(cli):
    line = assert_one_error_line(cli("submit", "--dataset", "digits"))
    assert line.startswith("error: 422 model: ")


@pytest.mark.parametrize("content,message", [
    ("- a\n- list\n", "expected a mapping of job fields"),
    ("model: mlp\nmodel: [unclosed\n", "(line 3, column 1): expected "),
])
def test_a_file_that_is_not_a_spec_is_one_line(cli, tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert message in assert_one_error_line(cli("submit", str(path)))


def test_a_missing_file_and_a_bad_set_are_one_line(cli, tmp_path):
    line = assert_one_error_line(cli("submit", str(tmp_path / "nope.yaml")))
    assert line == f"error: cannot read {tmp_path / 'nope.yaml'}: No such file or directory"
    assert "expected key=value" in assert_one_error_line(
        cli("submit", "--model", "mlp", "--dataset", "digits", "--set", "momentum"))
