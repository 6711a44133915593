"""A program model's lifecycle on the API's side: an upload's checks (names, the tenant's
stored bytes, each archive by core.program_archive, the pair), its files in the artifact
store and its row, nothing left behind after a refusal; the one a job names; deleting one.
Plain functions, no HTTP.

The archives are copied to a private temporary folder and checked there: nothing in them
is deserialised here (core.program_archive reads the zip's entries and the graph's JSON,
never a pickle), and the copies are gone when the request ends, refused or not. What is
stored is not the upload but its rewrite without the entries trainhub never reads: the
sample inputs (a torch.save pickle) emptied, `extra/` dropped, every other entry byte for
byte (core.program_zip); the row's sha256 and size are the stored files'.
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Iterator

from sqlalchemy.orm import Session

from core import jobs, program_archive, quota_ledger
from core.artifacts import get_store, program_key, program_prefix
from core.config import Settings
from core.dataset_uploads import MAX_NAME, checked_filename
from core.errors import FieldError
from core.ids import new_id
from core.program_zip import PAD_MAX, ProgramZip
from core.tables import Job, Program
from core.tenancy import Tenant, get_owned
from core.text import echo, storable
from models import unknown_model_message

log = logging.getLogger(__name__)

# The form fields the two archives come in, in the order they are hashed.
TRAIN_FIELD, EVAL_FIELD = "file", "eval_file"


@dataclass(frozen=True)
class Upload:
    """One archive of a request: its spooled body, its size if known, its file name."""

    field: str
    file: BinaryIO
    size: int | None
    filename: str | None


@dataclass(frozen=True)
class Checked:
    """An archive copied to the temporary folder and checked there."""

    upload: Upload
    path: Path
    info: program_archive.ProgramInfo


def accept_program(session: Session, tenant: Tenant, train: Upload, eval_: Upload | None,
                   name: str | None, settings: Settings) -> Program:
    """Check the archives (each, then the pair), store them and the program's row.
    FieldError (ProgramRejected) naming `file` or `eval_file` for an archive refused, one
    over the size cap too; CapReached at the tenant's stored bytes. Nothing stays behind
    after a refusal."""
    storable("name", name)
    for upload in (train, eval_):
        if upload is not None:
            checked_filename(upload.filename, upload.field)
    quota_ledger.check_stored_bytes(session, tenant, settings.tenant_max_stored_bytes)
    session.rollback()  # no connection held while the archives are checked
    with _workspace(settings) as folder:
        digest = hashlib.sha256()
        first = _check(train, folder, digest, settings)
        second = _check(eval_, folder, digest, settings) if eval_ is not None else None
        info = _check_modes(first, second)
        program_id = new_id()
        try:
            return _store(session, tenant, program_id, first, second, info, name,
                          digest.hexdigest(), settings)
        except BaseException:
            # Whatever failed once the files started to be stored (a cap, the database,
            # the store), none of them stay behind.
            _discard(program_id)
            raise


@contextmanager
def _workspace(settings: Settings) -> Iterator[Path]:
    parent = settings.data_dir / "tmp"
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="program-", dir=parent) as folder:
        yield Path(folder)


def _too_large(field: str, limit: int) -> FieldError:
    return program_archive.ProgramRejected(
        f"the file is larger than {limit} bytes (TRAINHUB_PROGRAM_MAX_UPLOAD_BYTES)", field)


def _check(upload: Upload, folder: Path, digest, settings: Settings) -> Checked:
    """The upload copied (capped) under folder and rewritten without the entries trainhub
    never reads, its sample inputs above all (ProgramZip.copy_without_ignored, once the
    zip's headers passed); the rewrite checked and hashed into digest: it is what is
    stored."""
    limits = program_archive.ProgramLimits.from_settings(settings)
    if upload.size is not None and upload.size > limits.max_file_bytes:
        raise _too_large(upload.field, limits.max_file_bytes)
    received, path = folder / f"{upload.field}.upload.pt2", folder / f"{upload.field}.pt2"
    upload.file.seek(0)
    copied = 0
    with open(received, "wb") as out:
        while chunk := upload.file.read(1 << 20):
            copied += len(chunk)
            if copied > limits.max_file_bytes:
                raise _too_large(upload.field, limits.max_file_bytes)
            out.write(chunk)
    try:
        with ProgramZip(received, limits) as archive:
            archive.copy_without_ignored(path)
    except program_archive.ProgramRejected as exc:
        exc.field = upload.field
        raise
    received.unlink()
    # The rewrite aligns each entry's data: a few bytes an entry more than the upload.
    padded = replace(limits, max_file_bytes=limits.max_file_bytes
                     + PAD_MAX * limits.max_entries)
    info = program_archive.check_archive(path, padded, upload.field)
    with open(path, "rb") as stored:
        while chunk := stored.read(1 << 20):
            digest.update(chunk)
    return Checked(upload, path, info)


def _check_modes(train: Checked, eval_: Checked | None) -> program_archive.ProgramInfo:
    """The train program's info once the modes are covered: the eval program is the same
    module's (check_pair), or there is none and the train graph holds no mode-dependent op
    (check_single)."""
    if eval_ is not None:
        program_archive.check_pair(train.info, eval_.info)
    else:
        program_archive.check_single(train.info)
    return train.info


def _store(session: Session, tenant: Tenant, program_id: str, train: Checked,
           eval_: Checked | None, info, name: str | None, sha256: str,
           settings: Settings) -> Program:
    store = get_store()
    size = 0
    keys = {}
    for mode, checked in (("train", train), ("eval", eval_)):
        if checked is None:
            continue
        keys[mode] = program_key(program_id, mode)
        with open(checked.path, "rb") as source:
            size += store.save_stream(keys[mode], source, checked.path.stat().st_size)
    quota_ledger.lock_tenant(session, tenant)  # until the row is committed, below
    quota_ledger.check_stored_bytes(session, tenant, settings.tenant_max_stored_bytes,
                                    adding=size)
    filename = train.upload.filename
    default_name = (filename or "model").split(".")[0][:MAX_NAME] or "model"
    row = Program(id=program_id, owner=tenant.user_id, name=name or default_name,
                  source_filename=filename,
                  eval_source_filename=eval_.upload.filename if eval_ else None,
                  train_key=keys["train"], eval_key=keys.get("eval"), sha256=sha256,
                  size_bytes=size, input_shape=list(info.input_shape),
                  num_classes=info.num_classes, parameter_count=info.parameter_count,
                  ops=sorted(info.ops))
    session.add(row)
    session.commit()
    return row


def _discard(program_id: str) -> None:
    try:
        get_store().delete_prefix(program_prefix(program_id))
    except Exception as exc:
        log.error("program %s: could not delete its files: %s", program_id, exc)


def program_for_job(session: Session, model: str, tenant: Tenant) -> Program:
    """The program a job's `model` (an id) names, if the tenant may use it; else the
    FieldError on `model` an unknown model gets (a foreign id is answered as a missing one)."""
    missing = FieldError("model", unknown_model_message(model, echo(model)))
    return get_owned(session, Program, model, tenant, missing=missing)


def check_fits(program: Program, num_classes: int, dataset: str, max_parameters: int,
               shape: tuple[int, int, int] | None = None) -> None:
    """A job's program against its dataset's image shape, class count and the parameter cap:
    FieldError on `model` naming both values (a program takes one fixed (C, H, W))."""
    if program.num_classes != num_classes:
        raise FieldError("model", (
            f"model {program.name} ({program.id}) outputs {program.num_classes} classes and "
            f"dataset {dataset} has {num_classes}: they must be equal; export the module "
            f"again with a {num_classes}-class output"))
    if shape is not None and tuple(program.input_shape) != tuple(shape):
        given, wanted = ("x".join(map(str, s)) for s in (program.input_shape, shape))
        raise FieldError("model", (
            f"model {program.name} ({program.id}) takes images of {given} (C x H x W) and "
            f"dataset {dataset} has {wanted}: they must be equal; export the module again "
            f"with an input of {wanted}"))
    if max_parameters and program.parameter_count > max_parameters:
        raise FieldError("model", (
            f"model {program.name} ({program.id}) has {program.parameter_count:,} "
            f"parameters, over this server's cap of {max_parameters:,} "
            "(TRAINHUB_MAX_MODEL_PARAMETERS)"))


def delete_program(session: Session, program_id: str, tenant: Tenant) -> None:
    """A program of the tenant's and its files; Conflict while a queued, running or
    paused job names it."""
    row = get_owned(session, Program, program_id, tenant)
    jobs.refuse_if_used(session, "model", program_id, Job.model)
    session.delete(row)
    session.commit()
    get_store().delete_prefix(program_prefix(program_id))
