"""LocalArtifactStore (core/artifacts.py): the store contract (tests/artifact_contract.py),
atomic saves on the local disk, key checks against the folder, and get_store()'s choice."""
from __future__ import annotations

import os

import pytest

from core import artifacts
from core.artifacts import LocalArtifactStore, check_key, checkpoint_key, job_prefix
from tests.artifact_contract import ArtifactStoreContract, Boom, failing_writer, writes


@pytest.fixture
def store(tmp_path):
    return LocalArtifactStore(tmp_path / "artifacts")


def all_files(root):
    """Every file under root, hidden ones included, as relative paths."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class TestLocalArtifactStore(ArtifactStoreContract):
    def stored_keys(self, store):
        return all_files(store.root)


def test_the_file_is_where_its_key_says(store):
    key = "jobs/abc/checkpoints/epoch-0001.pt"
    size, _ = store.save(key, writes(b"hello"))
    assert store.path(key) == store.root / key
    assert store.path(key).read_bytes() == b"hello" and os.path.getsize(store.path(key)) == size


def test_a_writer_that_fails_keeps_the_previous_file_in_place(store):
    key = "jobs/a/checkpoints/epoch-0002.pt"
    store.save(key, writes(b"the good old checkpoint"))
    before = os.stat(store.path(key))
    with pytest.raises(Boom):
        store.save(key, failing_writer)
    assert os.stat(store.path(key)).st_ino == before.st_ino


@pytest.mark.parametrize("key", ["a", "jobs/abc/checkpoints/epoch-0001.pt", "a/b/c/d/e/f",
                                 "...", "a..b"])
def test_good_keys_stay_in_the_root(store, key):
    assert store.path(key).is_relative_to(store.root)


def test_key_helpers():
    assert checkpoint_key("abc", 3) == "jobs/abc/checkpoints/epoch-0003.pt"
    assert checkpoint_key("abc", 12345) == "jobs/abc/checkpoints/epoch-12345.pt"
    assert job_prefix("abc") == "jobs/abc"
    check_key(checkpoint_key("0" * 32, 999999))


def test_a_symlink_out_of_the_root_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "artifacts"
    root.mkdir()
    (root / "jobs").symlink_to(outside, target_is_directory=True)
    store = LocalArtifactStore(root)
    with pytest.raises(ValueError):
        store.save("jobs/x.bin", writes(b"x"))
    with pytest.raises(ValueError):
        store.delete_prefix("jobs")
    assert list(outside.iterdir()) == []


def test_delete_prefix_removes_the_folder_and_keeps_the_root(store):
    store.save(checkpoint_key("abc", 1), writes(b"x"))
    store.save(checkpoint_key("abcd", 1), writes(b"y"))
    store.delete_prefix(job_prefix("abc"))
    assert not store.path(job_prefix("abc")).exists()
    assert store.root.is_dir() and store.path("jobs").is_dir()


def test_local_file_is_the_stored_file_itself(store):
    store.save("datasets/d/upload", writes(b"z"))
    with store.local_file("datasets/d/upload") as path:
        assert path == store.path("datasets/d/upload")
    assert path.exists()  # the store's own file: nothing to clean up


# ---- get_store() -----------------------------------------------------------------------------

@pytest.fixture
def settings_env(monkeypatch, tmp_path):
    from core.config import get_settings

    monkeypatch.setenv("TRAINHUB_DATA_DIR", str(tmp_path / "data"))

    def use(**env):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
    yield use
    get_settings.cache_clear()


@pytest.mark.parametrize("url", [None, "", "  "])
def test_without_an_artifact_url_the_store_is_the_data_dirs_folder(settings_env, tmp_path, url):
    settings_env(**({"TRAINHUB_ARTIFACT_URL": url} if url is not None else {}))
    store = artifacts.get_store()
    assert isinstance(store, LocalArtifactStore)
    assert store.root == (tmp_path / "data" / "artifacts").resolve()
    assert artifacts.remote_store() is None
    assert artifacts.check_store() == f"artifacts in {store.root}"


@pytest.mark.parametrize("url, says", [
    ("file:///tmp/x", "only s3:// URLs"),
    ("/srv/artifacts", "only s3:// URLs"),
    ("s3://", "is not a bucket name"),
    ("s3:/bucket", "is not a bucket name"),
    ("s3://Bucket_Name/x", "is not a bucket name"),
    ("s3://ab", "is not a bucket name"),
    ("s3://key:secret@bucket/x", "no credentials, port"),
    ("s3://bucket:9000/x", "no credentials, port"),
    ("s3://bucket/x?region=eu", "no credentials, port"),
    ("s3://bucket/a//b", "the prefix"),
    ("s3://bucket/a/../b", "the prefix"),
    ("s3://bucket/a b", "the prefix"),
])
def test_a_malformed_artifact_url_is_one_line_naming_the_setting(settings_env, capsys, url,
                                                                  says):
    settings_env(TRAINHUB_ARTIFACT_URL=url)
    for call in (artifacts.get_store, artifacts.check_store):
        with pytest.raises(artifacts.StoreConfigError) as caught:
            call()
        message = str(caught.value)
        assert message.startswith(f"TRAINHUB_ARTIFACT_URL={url!r}") and says in message
        assert "\n" not in message
    with pytest.raises(SystemExit) as stopped:
        artifacts.check_store_or_exit()
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: TRAINHUB_ARTIFACT_URL=") and err.count("\n") == 1


@pytest.mark.parametrize("url, bucket, prefix", [
    ("s3://bucket", "bucket", ""), ("s3://bucket/", "bucket", ""),
    ("s3://my.bucket-1/trainhub", "my.bucket-1", "trainhub"),
    ("s3://bkt/a/b/c/", "bkt", "a/b/c"),
])
def test_artifact_urls(url, bucket, prefix):
    from core.s3store import parse_url

    assert parse_url(url) == (bucket, prefix)


# ---- a full disk ---------------------------------------------------------------------------

def test_a_checkpoint_on_a_full_disk_fails_naming_the_file_and_leaves_no_temporary(tmp_path):
    """torch.save on a full device raises `RuntimeError: ... unexpected pos`, the ENOSPC only
    in its chain: the store says what and where instead (a real full tmpfs)."""
    import torch

    from core.files import NoSpaceLeft
    from tests.mounts import tmpfs

    with tmpfs(tmp_path / "small", 64 * 1024) as folder:
        store = LocalArtifactStore(folder)
        key = checkpoint_key("a" * 32, 1)
        with pytest.raises(NoSpaceLeft) as caught:  # 400 kB into 64 kB
            store.save(key, lambda f: torch.save({"w": torch.zeros(100_000)}, f))
        assert str(caught.value) == f"no space left on device: {folder / key}"
        assert isinstance(caught.value, OSError) and all_files(folder) == []


# ---- an unwritable data folder ---------------------------------------------------------------

@pytest.mark.parametrize("read_only", ["", "tensorboard", "cache"])
def test_an_unwritable_data_folder_is_one_line_naming_it(settings_env, tmp_path, capsys,
                                                         read_only):
    """A read-only mount (root writes through any permission bits, so chmod proves nothing):
    the data folder itself, or one of its folders mounted on its own."""
    from tests.mounts import make_read_only, tmpfs

    settings_env()
    data = (tmp_path / "data").resolve()
    with tmpfs(data / read_only if read_only else data, 1 << 20) as mount:
        assert artifacts.check_store() == f"artifacts in {data / 'artifacts'}"
        make_read_only(mount)
        with pytest.raises(SystemExit) as stopped:
            artifacts.check_store_or_exit()
        assert stopped.value.code == 1
        assert capsys.readouterr().err == (f"error: TRAINHUB_DATA_DIR={str(data)!r}: cannot "
                                           f"write to {mount} (Read-only file system)\n")
