"""`trainhub models upload|list|show|delete` against a real API process: a network written by
the test in a file of its own (BatchNorm, Dropout, a residual block), exported by the CLI in
both modes and uploaded; a .pt2 pair made by hand; a network torch.export cannot trace is
one `error:` line with torch's reason."""
from __future__ import annotations

import textwrap

from tests.integration.cli.conftest import assert_one_error_line

NET = textwrap.dedent("""
    import torch
    from torch import nn


    class Block(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(channels)

        def forward(self, x):
            return torch.relu(x + self.bn(self.conv(x)))


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 6, 3, padding=1)
            self.block = Block(6)
            self.drop = nn.Dropout(0.2)
            self.head = nn.Linear(6 * 8 * 8, 10)

        def forward(self, x):
            return self.head(self.drop(self.block(self.stem(x)).flatten(1)))


    class Moody(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(64, 10)

        def forward(self, x):
            if x.sum() > 0:  # on the values: torch.export cannot trace it
                return self.head(x.flatten(1))
            return -self.head(x.flatten(1))
""")


def test_a_module_is_exported_uploaded_listed_shown_and_deleted(cli, http, tmp_path):
    (tmp_path / "my_net.py").write_text(NET)
    run = cli("models", "upload", f"{tmp_path / 'my_net.py'}:Net", "--input-shape", "1,8,8")
    assert run.exit_code == 0, run.stderr
    model_id = run.lines[-1]
    assert len(model_id) == 32
    assert "model my_net.Net: input 1x8x8, 10 classes" in run.stderr
    program = http.get(f"/models/{model_id}").json()
    assert program["source_filename"] == "Net-train.pt2"
    assert program["eval_source_filename"] == "Net-eval.pt2"
    assert "aten.batch_norm.default" in program["ops"]

    listing = cli("models", "list")
    assert listing.exit_code == 0, listing.stderr
    row = next(line for line in listing.lines if model_id in line)
    assert "my_net.Net" in row and "program" in row and "1x8x8, 10 classes" in row
    assert any(line.split()[0] == "lenet" for line in listing.lines if line.strip())

    shown = cli("models", "show", model_id[:10])
    assert shown.exit_code == 0, shown.stderr
    assert model_id in shown.stdout and "aten.conv2d.default" in shown.stdout
    assert "Net-train.pt2 (train), Net-eval.pt2 (eval)" in shown.stdout

    deleted = cli("models", "delete", model_id)
    assert deleted.exit_code == 0 and deleted.lines == [f"model {model_id} deleted"]
    assert_one_error_line(cli("models", "show", model_id),
                          f"error: 404 model '{model_id}' not found")


def test_a_pt2_pair_made_by_hand_is_uploaded_as_it_is(cli, http, tmp_path):
    from core.program_limits import ProgramLimits
    from core.program_zip import ProgramZip
    from tests.programs import residual_pair

    train, eval_ = residual_pair(tmp_path)
    run = cli("models", "upload", train, "--eval-file", eval_, "--name", "by-hand")
    assert run.exit_code == 0, run.stderr
    program = http.get(f"/models/{run.lines[-1]}").json()
    # The files as they are stored: without their sample inputs (core.program_zip).
    stored = []
    for archive in (train, eval_):
        with ProgramZip(archive, ProgramLimits()) as opened:
            opened.copy_without_ignored(archive.with_suffix(".stored.pt2"))
        stored.append(archive.with_suffix(".stored.pt2").stat().st_size)
    assert program["name"] == "by-hand" and program["size_bytes"] == sum(stored)
    assert http.delete(f"/models/{program['id']}").status_code == 204
    # The train program alone holds mode-dependent ops: the server's 422, on one line.
    line = assert_one_error_line(cli("models", "upload", train))
    assert line.startswith("error: 422 file: ") and "aten.batch_norm.default" in line


def test_an_export_failure_is_one_line_with_torchs_reason(cli, http, tmp_path):
    (tmp_path / "my_net.py").write_text(NET)
    before = http.get("/models").json()["models"]
    line = assert_one_error_line(cli("models", "upload", f"{tmp_path / 'my_net.py'}:Moody",
                                     "--input-shape", "1,8,8"))
    assert line.startswith(f"error: cannot export {tmp_path / 'my_net.py'}:Moody in train "
                           "mode: GuardOnDataDependentSymNode: Could not guard on "
                           "data-dependent expression"), line
    assert http.get("/models").json()["models"] == before  # nothing was sent
    for args, words in ((["--input-shape", "1,8"], "three positive integers"),
                        ([], "--input-shape C,H,W is needed"),
                        (["--input-shape", "1,8,8", "--eval-file", "x.pt2"], "goes with a .pt2")):
        line = assert_one_error_line(cli("models", "upload", f"{tmp_path / 'my_net.py'}:Net",
                                         *args))
        assert words in line, line
    assert_one_error_line(cli("models", "upload", f"{tmp_path / 'my_net.py'}:Nope",
                              "--input-shape", "1,8,8"), f"error: {tmp_path / 'my_net.py'} "
                                                         "has no Nope")
