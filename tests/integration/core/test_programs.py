"""core.programs on the real Postgres, with program rows made straight in the database (the
archives' own checks are core.program_archive's; uploads over HTTP:
tests/integration/api/test_programs.py): a job naming a program is checked at submission
(its owner's only: another tenant's is the unknown model's 422; its classes against the
dataset's, both numbers named), a program a queued job names cannot be deleted, and a
deleted one leaves no file; on an S3 artifact store (moto's
server) as on a local one. An upload is stored without its sample inputs (issue 23)."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from core import job_submission, jobs, programs, queue
from core.artifacts import get_store, program_key, program_prefix
from core.config import get_settings
from core.db import session_scope, upgrade_schema
from core.errors import Conflict, FieldError, NotFound
from core.ids import new_id
from core.jobspec import JobSpec
from core.quota_ledger import stored_bytes
from core.states import JobStatus
from core.tables import Job, Program
from core.tenancy import Tenant
from tests.s3server import s3_server  # noqa: F401 (a fixture)


@pytest.fixture(scope="module", autouse=True)
def schema():
    upgrade_schema()
    yield
    # The database is shared with the rest of the run: GET /models with authentication
    # off (an admin) would list this module's programs beside the built-ins.
    with session_scope() as session:
        for row in session.scalars(select(Program).where(Program.id.in_(MADE))):
            session.delete(row)
    for program_id in MADE:
        get_store().delete_prefix(program_prefix(program_id))


MADE: list[str] = []


@pytest.fixture
def sent(monkeypatch):
    messages = []
    monkeypatch.setattr(queue, "enqueue",
                        lambda task, *args, queue=None: messages.append((task, args)))
    return messages


def tenant(name: str) -> Tenant:
    return Tenant(user_id=f"{name}-{uuid.uuid4().hex[:8]}", name=name, is_admin=False)


def make_program(owner: Tenant, num_classes: int = 10, name: str = "tiny",
                 input_shape: tuple[int, int, int] = (1, 8, 8)) -> str:
    """A program's row and two stand-in files (what they hold is not read here)."""
    program_id = new_id()
    MADE.append(program_id)
    store = get_store()
    size = sum(store.save(program_key(program_id, mode), lambda f: f.write(b"x" * 100))[0]
               for mode in ("train", "eval"))
    with session_scope() as session:
        session.add(Program(id=program_id, owner=owner.user_id, name=name,
                            source_filename="net-train.pt2", eval_source_filename="net-eval.pt2",
                            train_key=program_key(program_id, "train"),
                            eval_key=program_key(program_id, "eval"), sha256="0" * 64,
                            size_bytes=size, input_shape=list(input_shape),
                            num_classes=num_classes,
                            parameter_count=1234, ops=["aten.linear.default"]))
    return program_id


def submit(model: str, owner: Tenant, **fields):
    with session_scope() as session:
        return job_submission.submit(session, JobSpec(model=model, dataset="digits", **fields),
                                     owner, get_settings())


def test_the_spec_takes_an_id_as_model_and_the_schema_says_so():
    assert JobSpec(model="0" * 32, dataset="digits").model == "0" * 32
    schema = JobSpec.model_json_schema()["properties"]["model"]
    assert [alt.get("pattern") for alt in schema["anyOf"]] == [None, "^[0-9a-f]{32}$"]
    with pytest.raises(ValueError, match="unknown model 'ABC'"):
        JobSpec(model="ABC", dataset="digits")


def test_a_job_names_its_owners_program_and_is_named_after_it(sent):
    alice = tenant("alice")
    program_id = make_program(alice, name="resnetish")
    done = submit(program_id, alice)
    assert done.job.model == program_id and done.job.name == "resnetish-digits"
    assert len(sent) == 1
    with session_scope() as session:
        jobs.transition(session, done.job.id, JobStatus.cancelled)


def test_another_tenants_program_is_the_unknown_models_422(sent):
    alice, bob = tenant("alice"), tenant("bob")
    program_id = make_program(alice)
    with pytest.raises(FieldError) as foreign:
        submit(program_id, bob)
    missing = new_id()
    with pytest.raises(FieldError) as absent:
        submit(missing, bob)
    assert foreign.value.field == absent.value.field == "model"
    assert (foreign.value.message.replace(program_id, "<id>")
            == absent.value.message.replace(missing, "<id>"))
    assert foreign.value.message.startswith(f"unknown model '{program_id}'")
    assert sent == []


def test_classes_unlike_the_datasets_are_a_422_naming_both_numbers(sent):
    alice = tenant("alice")
    program_id = make_program(alice, num_classes=3)
    with pytest.raises(FieldError) as refused:
        submit(program_id, alice)
    assert refused.value.field == "model"
    assert "outputs 3 classes" in refused.value.message
    assert "dataset digits has 10" in refused.value.message
    assert sent == []


def test_an_input_shape_unlike_the_datasets_is_a_422_naming_both(sent):
    alice = tenant("alice")
    program_id = make_program(alice, input_shape=(3, 32, 32))
    with pytest.raises(FieldError) as refused:
        submit(program_id, alice)
    assert refused.value.field == "model"
    assert "takes images of 3x32x32 (C x H x W) and dataset digits has 1x8x8" in (
        refused.value.message)
    assert sent == []


def test_options_of_torchvision_models_are_refused_for_a_program():
    for fields, field in (({"hyperparameters": {"image_size": 16}}, "image_size"),
                          ({"hyperparameters": {"freeze": "backbone"}}, "freeze"),
                          ({"pretrained": "DEFAULT"}, "pretrained")):
        with pytest.raises(ValueError, match=field):
            JobSpec(model=new_id(), dataset="digits", **fields)


def test_a_program_a_queued_job_names_is_kept_until_the_job_ends(sent):
    alice = tenant("alice")
    program_id = make_program(alice)
    job = submit(program_id, alice).job
    with session_scope() as session, pytest.raises(Conflict, match=job.id):
        programs.delete_program(session, program_id, alice)
    with session_scope() as session:
        jobs.transition(session, job.id, JobStatus.cancelled)
    assert get_store().exists(program_key(program_id, "train"))
    with session_scope() as session:
        assert stored_bytes(session, alice.user_id) == 200
        programs.delete_program(session, program_id, alice)
    with session_scope() as session:
        assert session.get(Program, program_id) is None
        assert session.get(Job, job.id) is not None  # the job stays, naming what it trained
        assert stored_bytes(session, alice.user_id) == 0
    assert not get_store().exists(program_key(program_id, "train"))
    assert not get_store().exists(program_key(program_id, "eval"))


def test_only_the_owner_deletes_a_program():
    alice, bob = tenant("alice"), tenant("bob")
    program_id = make_program(alice)
    with session_scope() as session, pytest.raises(NotFound, match="model"):
        programs.delete_program(session, program_id, bob)
    assert get_store().exists(program_key(program_id, "train"))
    with session_scope() as session:
        programs.delete_program(session, program_id, alice)


def test_an_upload_past_the_stored_bytes_cap_is_refused_and_leaves_nothing(tmp_path):
    from io import BytesIO

    from core.quota_ledger import CapReached
    from tests.programs import PlainNet, export, save

    path = save(export(PlainNet(), training=True), tmp_path / "plain.pt2")
    data = path.read_bytes()
    stored = stored_copy(path, tmp_path / "stored.pt2").stat().st_size  # what counts
    alice = tenant("alice")
    upload = programs.Upload("file", BytesIO(data), len(data), "plain.pt2")
    for cap, taken in ((stored - 1, False), (stored, True)):
        settings = get_settings().model_copy(update={"tenant_max_stored_bytes": cap})
        before = sorted((get_settings().artifacts_dir / "programs").rglob("*"))
        with session_scope() as session:
            if not taken:
                with pytest.raises(CapReached, match="TRAINHUB_TENANT_MAX_STORED_BYTES"):
                    programs.accept_program(session, alice, upload, None, None, settings)
                assert sorted((get_settings().artifacts_dir / "programs").rglob("*")) == before
                assert stored_bytes(session, alice.user_id) == 0
            else:
                row = programs.accept_program(session, alice, upload, None, None, settings)
                assert row.size_bytes == stored and row.name == "plain"
                assert stored_bytes(session, alice.user_id) == stored
                programs.delete_program(session, row.id, alice)
    assert not list((get_settings().data_dir / "tmp").glob("program-*"))


def stored_copy(source, target):
    """What core.programs stores for an upload of source."""
    from core.program_archive import ProgramLimits
    from core.program_zip import ProgramZip

    with ProgramZip(source, ProgramLimits()) as archive:
        archive.copy_without_ignored(target)
    return target


def test_a_stored_program_holds_no_sample_inputs_and_torch_export_load_runs_nothing(
        tmp_path):
    """Issue 23: the sample inputs (here a crafted pickle) and extra/ are not stored; the
    sample inputs entry is stored empty, so plain torch.export.load on a stored file loads
    it, unpickles nothing, and (with no sample inputs) its module() compiles no guard from
    the graph's guards_code (here Python that leaves a marker too). sha256 and size_bytes
    are the stored files'."""
    import hashlib
    import logging
    import zipfile
    from io import BytesIO

    import torch

    from tests.programs import CLASSES, images, marker_pickle, residual_pair, rewrite

    pickled, guarded = tmp_path / "unpickled", tmp_path / "guarded"
    train, eval_ = residual_pair(tmp_path)
    crafted = {"data/sample_inputs/model.pt": marker_pickle(pickled)}

    def add_guard(document):
        document["guards_code"] = [f"open({str(guarded)!r}, 'w') is None"]

    paths = [rewrite(train, tmp_path / "evil-train.pt2", replace=crafted,
                     add={"extra/notes.txt": b"hello"}),
             rewrite(eval_, tmp_path / "evil-eval.pt2", replace=crafted, graph=add_guard)]
    uploads = [programs.Upload(field, BytesIO(path.read_bytes()), None, path.name)
               for field, path in zip(("file", "eval_file"), paths)]
    alice = tenant("alice")
    with session_scope() as session:
        row = programs.accept_program(session, alice, *uploads, None, get_settings())
        MADE.append(row.id)
        program_id, sha256, size = row.id, row.sha256, row.size_bytes
    stored = [get_store().path(program_key(program_id, mode)) for mode in ("train", "eval")]
    assert sha256 == hashlib.sha256(b"".join(p.read_bytes() for p in stored)).hexdigest()
    assert size == sum(p.stat().st_size for p in stored)
    for path in stored:
        with zipfile.ZipFile(path) as zf:
            sample_inputs = [i for i in zf.infolist() if "/data/sample_inputs/" in i.filename]
            assert [i.file_size for i in sample_inputs] == [0]
            assert not any("/extra/" in name for name in zf.namelist())
    serde_log = logging.getLogger("torch._export.serde.serialize")
    serde_log.disabled = True  # torch's fallback warning (its format string is broken)
    try:
        loaded = torch.export.load(stored[1])
        assert loaded.example_inputs is None
        assert loaded.module()(images(2)).shape == (2, CLASSES)
        assert not pickled.exists() and not guarded.exists()
        torch.export.load(paths[1])  # the upload itself runs the pickle...
        assert pickled.exists()
        guard_only = rewrite(eval_, tmp_path / "guard.pt2", graph=add_guard)
        with pytest.raises(AssertionError):  # ...and, with sample inputs, the guard
            torch.export.load(guard_only).module()(images(2))
        assert guarded.exists()
    finally:
        serde_log.disabled = False
    with session_scope() as session:
        programs.delete_program(session, program_id, alice)


def test_a_programs_files_live_in_an_s3_store_too(s3_server, monkeypatch, tmp_path):  # noqa: F811
    """The artifact store may be S3 (moto's server): the upload stores both archives under
    programs/<id>/, the worker's build reads them back into a pair whose sha256 is the
    row's, and a delete leaves no key."""
    from io import BytesIO

    import torch

    from core.program_models import build_program_model
    from core.s3store import S3ArtifactStore
    from tests.programs import CLASSES, SHAPE, residual_pair

    bucket = s3_server.new_bucket()
    store = S3ArtifactStore(bucket, "trainhub", client=s3_server.client(),
                            tmp_dir=tmp_path / "s3-tmp")
    monkeypatch.setattr(programs, "get_store", lambda: store)
    train, eval_ = residual_pair(tmp_path)
    uploads = [programs.Upload(field, BytesIO(path.read_bytes()), path.stat().st_size,
                               path.name)
               for field, path in (("file", train), ("eval_file", eval_))]
    alice = tenant("alice")
    with session_scope() as session:
        row = programs.accept_program(session, alice, *uploads, None, get_settings())
        program_id, sha256 = row.id, row.sha256
    assert s3_server.keys(bucket) == [f"trainhub/programs/{program_id}/eval.pt2",
                                      f"trainhub/programs/{program_id}/train.pt2"]

    pair = build_program_model(store, program_id)
    assert pair.program_sha256 == sha256
    pair.eval()
    with torch.no_grad():
        assert pair(torch.zeros(2, *SHAPE)).shape == (2, CLASSES)

    with session_scope() as session:
        programs.delete_program(session, program_id, alice)
    assert s3_server.keys(bucket) == []
