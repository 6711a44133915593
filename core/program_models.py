"""The network a job or checkpoint names: a built-in, or a tenant's program (ProgramPair).

A program model is named by its id: a ProgramPair over its stored train and eval archives.

The archives are read from the artifact store and deserialised only through
core.program_archive.load_checked_pair (checked again: the store is not trusted more than
the upload was). The files' sha256 (train bytes, then eval bytes, as core.programs hashes
them on upload) travels with the pair, so a checkpoint can record which program its weights
fit and a later load can refuse a program that is not that one.
"""
from __future__ import annotations

import hashlib
from contextlib import ExitStack

import models
from core.artifacts import ArtifactStore, program_key
from core.checkpoint_format import CheckpointError
from core.config import get_settings
from core.ids import is_id
from core.program_archive import ProgramLimits, ProgramRejected, load_checked_pair


class ProgramMissing(Exception):
    """The program's files are not in the artifact store (deleted, or never stored)."""


def build_program_model(store: ArtifactStore, program_id: str):
    """The program's ProgramPair, freshly loaded, with `program_sha256` set on it."""
    from models.program_pair import ProgramPair

    keys = [program_key(program_id, "train")]
    if store.exists(program_key(program_id, "eval")):
        keys.append(program_key(program_id, "eval"))
    digest = hashlib.sha256()
    with ExitStack() as stack:
        try:
            paths = [stack.enter_context(store.local_file(key)) for key in keys]
        except FileNotFoundError:
            raise ProgramMissing(f"model {program_id} not found: its program's files are "
                                 "gone") from None
        for path in paths:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        limits = ProgramLimits.from_settings(get_settings())
        pair = ProgramPair(*load_checked_pair(*paths, limits=limits))
    pair.program_sha256 = digest.hexdigest()
    return pair


def build_model(store: ArtifactStore, name: str, input_shape, num_classes: int):
    """A freshly initialised network: a built-in by name, or a program by its id."""
    if is_id(name):
        return build_program_model(store, name)
    return models.build(name, input_shape, num_classes)


def build_for_checkpoint(store: ArtifactStore, architecture: dict):
    """The network a checkpoint's architecture names, ready for its weights; a program whose
    stored files are not those the checkpoint was trained on is a CheckpointError."""
    name = architecture["name"]
    if not is_id(name):
        return models.build(name, tuple(architecture["input_shape"]),
                            architecture["num_classes"])
    try:
        model = build_program_model(store, name)
    except (ProgramMissing, ProgramRejected) as exc:
        raise CheckpointError(str(exc)) from None
    recorded = architecture.get("program_sha256")
    if recorded != model.program_sha256:
        raise CheckpointError(f"its weights were trained on program {name} with sha256 "
                              f"{recorded}, the stored program's is {model.program_sha256}")
    return model


def program_sha256(model) -> str | None:
    """What a checkpoint records of a program model's files (None for a built-in)."""
    return getattr(getattr(model, "module", model), "program_sha256", None)
