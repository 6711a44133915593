"""LocalArtifactStore (core/artifacts.py): atomic saves with size and sha256, key checks."""
from __future__ import annotations

import hashlib
import os

import pytest
import torch

from core.artifacts import LocalArtifactStore, check_key, checkpoint_key, job_prefix


@pytest.fixture
def store(tmp_path):
    return LocalArtifactStore(tmp_path / "artifacts")


def all_files(root):
    """Every file under root, hidden ones included, as relative paths."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def writes(*chunks):
    def write(f):
        for chunk in chunks:
            f.write(chunk)
    return write


# ---- save ------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunks", [
    [b""],
    [b"hello"],
    [b"a" * 10, bytearray(b"b" * 3), memoryview(b"cdef")],
    [os.urandom(1 << 16) for _ in range(40)],  # 2.5 MiB in pieces
], ids=["empty", "one", "mixed-buffers", "large"])
def test_save_returns_the_files_size_and_sha256(store, chunks):
    key = "jobs/abc/checkpoints/epoch-0001.pt"
    size, sha = store.save(key, writes(*chunks))
    content = store.path(key).read_bytes()
    assert content == b"".join(bytes(c) for c in chunks)
    assert size == len(content) == os.path.getsize(store.path(key))
    assert sha == hashlib.sha256(content).hexdigest()
    assert store.exists(key)
    assert all_files(store.root) == [key]  # no temporary file left beside it


def test_save_replaces_an_existing_version(store):
    key = "jobs/a/x.bin"
    store.save(key, writes(b"old content, longer than the new one"))
    size, sha = store.save(key, writes(b"new"))
    assert store.path(key).read_bytes() == b"new"
    assert (size, sha) == (3, hashlib.sha256(b"new").hexdigest())
    assert all_files(store.root) == [key]


class Boom(RuntimeError):
    pass


def failing_writer(f):
    f.write(b"partial data " * 1000)
    raise Boom("disk on fire")


def test_a_writer_that_fails_leaves_no_file_and_no_temp(store):
    key = "jobs/a/checkpoints/epoch-0002.pt"
    with pytest.raises(Boom):
        store.save(key, failing_writer)
    assert not store.exists(key)
    assert all_files(store.root) == []


def test_a_writer_that_fails_keeps_the_previous_version_intact(store):
    key = "jobs/a/checkpoints/epoch-0002.pt"
    store.save(key, writes(b"the good old checkpoint"))
    before = os.stat(store.path(key))
    with pytest.raises(Boom):
        store.save(key, failing_writer)
    assert store.path(key).read_bytes() == b"the good old checkpoint"
    assert os.stat(store.path(key)).st_ino == before.st_ino
    assert all_files(store.root) == [key]


def test_a_writer_that_fails_in_torch_save_keeps_the_previous_version(store):
    key = checkpoint_key("abc", 1)
    store.save(key, lambda f: torch.save({"w": torch.arange(4)}, f))

    class Unsaveable:
        def __reduce__(self):
            raise Boom("cannot pickle")

    with pytest.raises(Boom):
        store.save(key, lambda f: torch.save({"w": torch.zeros(2), "x": Unsaveable()}, f))
    with store.open(key) as f:
        assert torch.equal(torch.load(f, weights_only=True)["w"], torch.arange(4))
    assert all_files(store.root) == [key]


def test_torch_save_through_the_hashing_writer_loads_back(store):
    blob = {"format": "x", "t": torch.randn(300, 200), "n": [1, 2.5, "s", None],
            "nested": {"ints": torch.arange(1000)}}
    key = checkpoint_key("0123456789abcdef0123456789abcdef", 7)
    size, sha = store.save(key, lambda f: torch.save(blob, f))
    data = store.path(key).read_bytes()
    assert size == len(data) and sha == hashlib.sha256(data).hexdigest()
    with store.open(key) as f:
        loaded = torch.load(f, weights_only=True)
    assert torch.equal(loaded["t"], blob["t"])
    assert torch.equal(loaded["nested"]["ints"], blob["nested"]["ints"])
    assert loaded["n"] == blob["n"]
    assert all_files(store.root) == [key]


# ---- keys ------------------------------------------------------------------------------------

BAD_KEYS = [
    "", ".", "..", "../x", "x/..", "jobs/../../etc/passwd", "jobs/./x", "/etc/passwd", "/x",
    "a//b", "a/", "/", "a\\b", "..\\x", "C:\\x", "a b", "a:b", "a*b", "é", "a\x00b", "~/x",
    "jobs/%2e%2e/x", "a\tb", "x\n/y", "\n",
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=[repr(k) for k in BAD_KEYS])
def test_bad_keys_raise_value_error_everywhere(store, key):
    with pytest.raises(ValueError):
        check_key(key)
    calls = [lambda: store.save(key, writes(b"x")), lambda: store.open(key),
             lambda: store.exists(key), lambda: store.delete(key),
             lambda: list(store.iter_bytes(key))]
    if key != "a/":  # delete_prefix strips a trailing slash: "a/" names the folder "a"
        calls.append(lambda: store.delete_prefix(key))
    for call in calls:
        with pytest.raises(ValueError):
            call()
    assert not store.root.exists() or all_files(store.root) == []


@pytest.mark.parametrize("key", ["a\n", "jobs/a/x.pt\n"], ids=repr)
def test_a_trailing_newline_is_not_a_valid_key(store, key):
    """'$' with .match() would accept one trailing newline."""
    with pytest.raises(ValueError):
        check_key(key)
    with pytest.raises(ValueError):
        store.save(key, writes(b"x"))


@pytest.mark.parametrize("key", ["a", "jobs/abc/checkpoints/epoch-0001.pt", "A-Z_0.9/x.y-z",
                                 "a/b/c/d/e/f", "...", "a..b"])
def test_good_keys(store, key):
    assert check_key(key) == key
    store.save(key, writes(b"x"))
    assert store.exists(key)
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


# ---- reading and deleting --------------------------------------------------------------------

@pytest.mark.parametrize("size, chunk_size", [(0, 1024), (1, 1024), (5000, 1024),
                                              (4096, 1024), ((5 << 20) // 2, 1 << 20)])
def test_iter_bytes_yields_the_whole_content_in_chunks(store, size, chunk_size):
    content = os.urandom(size)
    store.save("jobs/a/blob", writes(content))
    chunks = list(store.iter_bytes("jobs/a/blob", chunk_size=chunk_size))
    assert b"".join(chunks) == content
    assert all(len(c) == chunk_size for c in chunks[:-1])
    assert all(0 < len(c) <= chunk_size for c in chunks)
    assert len(chunks) == -(-size // chunk_size)


def test_iter_bytes_default_chunk_size(store):
    content = os.urandom((1 << 20) + 10)
    store.save("k", writes(content))
    assert [len(c) for c in store.iter_bytes("k")] == [1 << 20, 10]


def test_open_and_exists(store):
    assert not store.exists("jobs/a/x")
    with pytest.raises(FileNotFoundError):
        store.open("jobs/a/x")
    store.save("jobs/a/x", writes(b"content"))
    with store.open("jobs/a/x") as f:
        assert f.read() == b"content"
    assert not store.exists("jobs/a")  # a folder is not an artifact


def test_delete(store):
    store.save("jobs/a/x", writes(b"1"))
    store.save("jobs/a/y", writes(b"2"))
    store.delete("jobs/a/x")
    assert not store.exists("jobs/a/x") and store.exists("jobs/a/y")
    store.delete("jobs/a/x")  # deleting what is gone is fine
    store.delete("jobs/never/there")


def test_delete_prefix_removes_one_jobs_folder_only(store):
    for job in ("abc", "abcd", "ab", "other"):
        for epoch in (1, 2):
            store.save(checkpoint_key(job, epoch), writes(job.encode()))
    store.save("top-level.bin", writes(b"t"))
    store.delete_prefix(job_prefix("abc"))
    assert not store.path(job_prefix("abc")).exists()
    assert all_files(store.root) == sorted(
        [checkpoint_key(j, e) for j in ("abcd", "ab", "other") for e in (1, 2)]
        + ["top-level.bin"])
    for job in ("abcd", "ab", "other"):
        with store.open(checkpoint_key(job, 1)) as f:
            assert f.read() == job.encode()
    store.delete_prefix(job_prefix("ab") + "/")  # a trailing slash names the same folder
    assert not store.path("jobs/ab").exists() and store.exists(checkpoint_key("abcd", 1))
    store.delete_prefix(job_prefix("abc"))  # already gone: no error
    store.delete_prefix("top-level.bin")  # a single file
    assert not store.exists("top-level.bin")
    assert store.root.is_dir() and store.path("jobs").is_dir()
