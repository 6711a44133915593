"""core.program_models without services: a built-in by name, a program by its id (its
files' sha256 on the pair, as core.programs hashes them), and checkpoints whose program is
gone or other than the one they were trained on refused as CheckpointError."""
from __future__ import annotations

import hashlib

import pytest
import torch

from core import checkpoint_format as ckpt
from core.artifacts import LocalArtifactStore, program_key
from core.program_models import (
    ProgramMissing,
    build_for_checkpoint,
    build_model,
    program_sha256,
)
from tests.programs import CLASSES, SHAPE, residual_pair

PROGRAM = "ab" * 16


@pytest.fixture
def store(tmp_path):
    store = LocalArtifactStore(tmp_path / "store")
    train, eval_ = residual_pair(tmp_path)
    for mode, path in (("train", train), ("eval", eval_)):
        store.save(program_key(PROGRAM, mode), lambda f, p=path: f.write(p.read_bytes()))
    return store, hashlib.sha256(train.read_bytes() + eval_.read_bytes()).hexdigest()


def test_a_built_in_is_built_by_name_and_records_no_program(store):
    model = build_model(store[0], "mlp", SHAPE, CLASSES)
    assert program_sha256(model) is None
    assert "program_sha256" not in ckpt.architecture("mlp", SHAPE, CLASSES)


def test_a_program_is_its_pair_with_its_files_sha256(store):
    model = build_model(store[0], PROGRAM, SHAPE, CLASSES)
    assert program_sha256(model) == store[1]
    assert "block.bn.running_mean" in model.state_dict()
    model.set_mode(False)
    assert model(torch.zeros(2, *SHAPE)).shape == (2, CLASSES)


def test_a_checkpoint_builds_its_program_only_while_its_files_are_those_it_recorded(store):
    arch = ckpt.architecture(PROGRAM, SHAPE, CLASSES, store[1])
    assert program_sha256(build_for_checkpoint(store[0], arch)) == store[1]
    with pytest.raises(ckpt.CheckpointError, match="sha256"):
        build_for_checkpoint(store[0], {**arch, "program_sha256": "0" * 64})
    store[0].delete(program_key(PROGRAM, "train"))
    with pytest.raises(ProgramMissing):
        build_model(store[0], PROGRAM, SHAPE, CLASSES)
    with pytest.raises(ckpt.CheckpointError, match="gone"):
        build_for_checkpoint(store[0], arch)
