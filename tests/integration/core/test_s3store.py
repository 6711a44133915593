"""S3ArtifactStore (core/s3store.py) against a real S3-protocol server (moto's, in its own
process): the store contract of tests/artifact_contract.py, what is S3's own (prefixes,
batched deletes, multipart, errors), the startup check, get_store()'s choice and the
TensorBoard event files' copy."""
from __future__ import annotations

import hashlib
import logging
import os
import uuid
from types import SimpleNamespace

import pytest

from core import artifacts, s3store
from core.artifacts import ArtifactStoreError, StoreConfigError, checkpoint_key, job_prefix
from core.s3store import S3ArtifactStore, make_client
from tests.artifact_contract import ArtifactStoreContract, Boom, failing_writer, read, writes
from tests.procs import free_port
from tests.s3server import AWS_ENV, ISOLATION_ENV, s3_server  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def bucket(s3_server):  # noqa: F811
    return s3_server.new_bucket()


def new_store(server, bucket: str, tmp_path, prefix: str | None = None) -> S3ArtifactStore:
    prefix = f"p-{uuid.uuid4().hex[:8]}/trainhub" if prefix is None else prefix
    return S3ArtifactStore(bucket, prefix, client=server.client(), tmp_dir=tmp_path / "tmp")


@pytest.fixture
def store(s3_server, bucket, tmp_path):  # noqa: F811
    return new_store(s3_server, bucket, tmp_path)


def keys_of(store: S3ArtifactStore, server) -> list[str]:
    """The store's keys in the bucket, without its prefix, and any temporary file it left."""
    head = f"{store.prefix}/" if store.prefix else ""
    keys = [k[len(head):] for k in server.keys(store.bucket, head)]
    leftovers = sorted(os.listdir(store.tmp_dir)) if store.tmp_dir.exists() else []
    return keys + [f"tmp:{name}" for name in leftovers]


class TestS3ArtifactStore(ArtifactStoreContract):
    @pytest.fixture(autouse=True)
    def _server(self, s3_server):  # noqa: F811
        self.server = s3_server

    def stored_keys(self, store):
        return keys_of(store, self.server)


# ---- what is S3's own ------------------------------------------------------------------------

def test_keys_live_under_the_urls_prefix(s3_server, bucket, store):  # noqa: F811
    store.save(checkpoint_key("abc", 1), writes(b"x"))
    assert s3_server.keys(bucket, store.prefix) == [
        f"{store.prefix}/jobs/abc/checkpoints/epoch-0001.pt"]
    assert store.url == f"s3://{bucket}/{store.prefix}"


def test_a_store_without_prefix_uses_the_bucket_root(s3_server, tmp_path):  # noqa: F811
    bucket = s3_server.new_bucket()
    store = new_store(s3_server, bucket, tmp_path, prefix="")
    store.save("jobs/a/x", writes(b"1"))
    store.delete_prefix("jobs/a")
    store.save("datasets/d/tensors.pt", writes(b"2"))
    assert s3_server.keys(bucket) == ["datasets/d/tensors.pt"]
    assert store.url == f"s3://{bucket}"


def test_delete_prefix_touches_no_other_prefix_sharing_the_bucket(s3_server, bucket,  # noqa: F811
                                                                   tmp_path):
    one = new_store(s3_server, bucket, tmp_path, prefix="shared-a")
    other = new_store(s3_server, bucket, tmp_path, prefix="shared-ab")
    for store in (one, other):
        store.save(checkpoint_key("job", 1), writes(b"x"))
    one.delete_prefix(job_prefix("job"))
    assert not one.exists(checkpoint_key("job", 1))
    assert other.exists(checkpoint_key("job", 1))


def test_delete_prefix_deletes_in_batches(s3_server, store, monkeypatch):  # noqa: F811
    monkeypatch.setattr(s3store, "_DELETE_BATCH", 3)
    keys = [checkpoint_key("many", e) for e in range(1, 9)]
    for key in keys:
        store.save(key, writes(key.encode()))
    store.save(checkpoint_key("manyx", 1), writes(b"kept"))
    store.delete_prefix(job_prefix("many"))
    assert keys_of(store, s3_server) == [checkpoint_key("manyx", 1)]


def test_a_large_save_goes_up_in_parts_and_comes_back_whole(store):
    content = os.urandom(20 << 20)  # past boto3's 8 MiB multipart threshold
    size, sha = store.save("jobs/big/checkpoints/epoch-0001.pt",
                           writes(*(content[i:i + (1 << 20)] for i in range(0, len(content),
                                                                            1 << 20))))
    assert (size, sha) == (len(content), hashlib.sha256(content).hexdigest())
    assert b"".join(store.iter_bytes("jobs/big/checkpoints/epoch-0001.pt")) == content
    with store.local_file("jobs/big/checkpoints/epoch-0001.pt") as path:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha


def test_temporary_files_go_once_done_even_on_errors(s3_server, store):  # noqa: F811
    store.save("datasets/d/upload", writes(b"archive"))
    with pytest.raises(Boom):
        with store.local_file("datasets/d/upload") as path:
            assert path.parent == store.tmp_dir and path.read_bytes() == b"archive"
            raise Boom("processing failed")
    assert not path.exists()
    with pytest.raises(Boom):
        store.save("datasets/d/tensors.pt", failing_writer)
    with store.open("datasets/d/upload"):
        pass
    assert os.listdir(store.tmp_dir) == []
    assert keys_of(store, s3_server) == ["datasets/d/upload"]


def test_a_missing_bucket_is_an_os_error_naming_it(s3_server, tmp_path):  # noqa: F811
    store = new_store(s3_server, "no-such-bucket-here", tmp_path)
    with pytest.raises(ArtifactStoreError, match="NoSuchBucket"):
        store.save("jobs/a/x", writes(b"x"))
    with pytest.raises(OSError):
        store.delete_prefix("jobs/a")
    assert os.listdir(store.tmp_dir) == []


def test_an_unreachable_endpoint_is_an_os_error(tmp_path, monkeypatch):
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    client = make_client(f"http://127.0.0.1:{free_port()}", attempts=1)
    store = S3ArtifactStore("bucket", "x", client=client, tmp_dir=tmp_path)
    for call in (lambda: store.exists("a"), lambda: store.save("a", writes(b"x")),
                 lambda: read(store, "a"), lambda: list(store.iter_bytes("a"))):
        with pytest.raises(ArtifactStoreError, match="Could not connect"):
            call()


# ---- settings: get_store(), the startup check ------------------------------------------------

@pytest.fixture
def s3_settings(monkeypatch, tmp_path, s3_server):  # noqa: F811
    """use(url, endpoint=the server): the environment a trainhub process would have."""
    from core.config import get_settings

    for name, value in {**AWS_ENV, **ISOLATION_ENV}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TRAINHUB_DATA_DIR", str(tmp_path / "data"))

    def use(url: str, endpoint: str | None = s3_server.endpoint):
        monkeypatch.setenv("TRAINHUB_ARTIFACT_URL", url)
        if endpoint is None:
            monkeypatch.delenv("TRAINHUB_S3_ENDPOINT_URL", raising=False)
        else:
            monkeypatch.setenv("TRAINHUB_S3_ENDPOINT_URL", endpoint)
        get_settings.cache_clear()
    yield use
    get_settings.cache_clear()
    artifacts._s3_store.cache_clear()


def test_get_store_is_the_bucket_of_the_artifact_url(s3_settings, s3_server, bucket,  # noqa: F811
                                                     tmp_path):
    s3_settings(f"s3://{bucket}/deployment-x/")
    store = artifacts.get_store()
    assert isinstance(store, S3ArtifactStore)
    assert (store.bucket, store.prefix) == (bucket, "deployment-x")
    assert store.tmp_dir == (tmp_path / "data" / "tmp").resolve()
    assert artifacts.get_store() is store and artifacts.remote_store() is store  # one client
    store.save("jobs/j/checkpoints/epoch-0001.pt", writes(b"w"))
    assert "deployment-x/jobs/j/checkpoints/epoch-0001.pt" in s3_server.keys(bucket)
    assert not (tmp_path / "data" / "artifacts").exists()
    line = artifacts.check_store()
    assert line == f"artifacts in s3://{bucket}/deployment-x at {s3_server.endpoint}"


def check_fails(capsys) -> str:
    with pytest.raises(StoreConfigError) as caught:
        artifacts.check_store()
    with pytest.raises(SystemExit):
        artifacts.check_store_or_exit()
    err = capsys.readouterr().err
    assert err == f"error: {caught.value}\n"  # one line, no traceback
    return str(caught.value)


def test_the_startup_check_names_a_missing_bucket(s3_settings, capsys):
    s3_settings("s3://no-such-bucket-anywhere/x")
    message = check_fails(capsys)
    assert message.startswith("TRAINHUB_ARTIFACT_URL=s3://no-such-bucket-anywhere/x at "
                              "TRAINHUB_S3_ENDPOINT_URL=http://127.0.0.1:")
    assert message.endswith("bucket 'no-such-bucket-anywhere' does not exist")


def test_the_startup_check_names_an_unreachable_endpoint(s3_settings, bucket, capsys):
    s3_settings(f"s3://{bucket}", endpoint=f"http://127.0.0.1:{free_port()}")
    message = check_fails(capsys)
    assert "TRAINHUB_S3_ENDPOINT_URL" in message and "cannot reach the S3 endpoint" in message


def test_the_startup_check_names_a_malformed_endpoint(s3_settings, bucket, capsys):
    s3_settings(f"s3://{bucket}", endpoint="not a url")
    assert check_fails(capsys).startswith("TRAINHUB_S3_ENDPOINT_URL='not a url' is not usable")


def test_the_startup_check_says_when_there_are_no_credentials(s3_settings, bucket, capsys,
                                                               monkeypatch):
    s3_settings(f"s3://{bucket}")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    assert "no S3 credentials found" in check_fails(capsys)


# ---- TensorBoard event files -----------------------------------------------------------------

def points(*steps):
    return [SimpleNamespace(name="loss", value=1.0 / s, step=s) for s in steps]


def test_tensorboard_files_are_copied_on_flush_and_close(s3_server, store, tmp_path):  # noqa: F811
    from worker.tensorboard import TensorBoardLog

    job_id = uuid.uuid4().hex
    board = TensorBoardLog(tmp_path / "tb" / job_id, store=store, upload_every=0)
    board.add(points(1, 2))
    board.flush()
    [key] = keys_of(store, s3_server)
    assert key.startswith(f"jobs/{job_id}/tensorboard/events.out.tfevents.")
    name = key.rsplit("/", 1)[1]
    board.add(points(3))
    board.close()
    assert read(store, key) == (tmp_path / "tb" / job_id / name).read_bytes()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / name).write_bytes(read(store, key))
    acc = EventAccumulator(str(copy))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == [1, 2, 3]


def test_tensorboard_uploads_wait_for_upload_every(s3_server, store, tmp_path):  # noqa: F811
    from worker.tensorboard import TensorBoardLog

    board = TensorBoardLog(tmp_path / "tb" / "j1", store=store, upload_every=3600)
    board.add(points(1))
    board.flush()
    assert keys_of(store, s3_server) == []
    board.close()
    assert len(keys_of(store, s3_server)) == 1


def test_tensorboard_derives_the_store_from_the_settings(s3_settings, bucket, tmp_path):
    from worker.tensorboard import TensorBoardLog

    s3_settings(f"s3://{bucket}/tb-derived")
    board = TensorBoardLog(tmp_path / "tb" / "job-1")
    assert isinstance(board.store, S3ArtifactStore) and board.store.prefix == "tb-derived"
    assert board.key_prefix == "jobs/job-1/tensorboard"
    board.add(points(1))
    board.close()
    assert board.store.exists(
        f"jobs/job-1/tensorboard/{os.listdir(tmp_path / 'tb' / 'job-1')[0]}")


def test_tensorboard_has_no_copy_with_the_local_store(monkeypatch, tmp_path):
    from core.config import get_settings
    from worker.tensorboard import TensorBoardLog

    monkeypatch.delenv("TRAINHUB_ARTIFACT_URL", raising=False)
    get_settings.cache_clear()
    try:
        assert TensorBoardLog(tmp_path / "tb" / "j").store is None
    finally:
        get_settings.cache_clear()


def test_a_failed_tensorboard_copy_is_a_warning(s3_server, tmp_path, caplog):  # noqa: F811
    from worker.tensorboard import TensorBoardLog

    board = TensorBoardLog(tmp_path / "tb" / "j2",
                           store=new_store(s3_server, "no-such-bucket-here", tmp_path))
    board.add(points(1))
    with caplog.at_level(logging.WARNING):
        board.close()
    assert "could not copy TensorBoard file" in caplog.text and "NoSuchBucket" in caplog.text


def test_a_custom_endpoint_gets_path_style_and_checksums_only_where_required(monkeypatch):
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION"):
        monkeypatch.delenv(name, raising=False)
    config = make_client("http://minio.internal:9000").meta.config
    assert config.s3 == {"addressing_style": "path"}
    assert (config.request_checksum_calculation, config.response_checksum_validation) == (
        "when_required", "when_required")
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_supported")
    config = make_client("http://minio.internal:9000").meta.config
    assert config.request_checksum_calculation == "when_supported"
    config = make_client(None).meta.config  # AWS itself: boto3's defaults
    assert config.request_checksum_calculation == "when_supported" and not config.s3
