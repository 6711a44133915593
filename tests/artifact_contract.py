"""What every artifact store (core/artifacts.py's ArtifactStore) promises, as tests that any
store's test class inherits: `class TestX(ArtifactStoreContract)` with a `store` fixture
and a `stored_keys(store)` that lists every key it holds plus any leftover temporary file."""
from __future__ import annotations

import hashlib
import io
import os

import pytest
import torch

from core.artifacts import check_key, checkpoint_key, job_prefix
from core.errors import TooLarge


def writes(*chunks):
    def write(f):
        for chunk in chunks:
            f.write(chunk)
    return write


class Boom(RuntimeError):
    pass


def failing_writer(f):
    f.write(b"partial data " * 1000)
    raise Boom("disk on fire")


def read(store, key: str) -> bytes:
    with store.open(key) as f:
        return f.read()


BAD_KEYS = [
    "", ".", "..", "../x", "x/..", "jobs/../../etc/passwd", "jobs/./x", "/etc/passwd", "/x",
    "a//b", "a/", "/", "a\\b", "..\\x", "C:\\x", "a b", "a:b", "a*b", "é", "a\x00b", "~/x",
    "jobs/%2e%2e/x", "a\tb", "x\n/y", "\n",
]


class ArtifactStoreContract:
    def stored_keys(self, store) -> list[str]:
        raise NotImplementedError

    # ---- save --------------------------------------------------------------------------------

    @pytest.mark.parametrize("chunks", [
        [b""],
        [b"hello"],
        [b"a" * 10, bytearray(b"b" * 3), memoryview(b"cdef")],
        [os.urandom(1 << 16) for _ in range(40)],  # 2.5 MiB in pieces
    ], ids=["empty", "one", "mixed-buffers", "large"])
    def test_save_returns_the_files_size_and_sha256(self, store, chunks):
        key = "jobs/abc/checkpoints/epoch-0001.pt"
        size, sha = store.save(key, writes(*chunks))
        content = read(store, key)
        assert content == b"".join(bytes(c) for c in chunks)
        assert size == len(content)
        assert sha == hashlib.sha256(content).hexdigest()
        assert store.exists(key)
        assert self.stored_keys(store) == [key]  # no temporary file left beside it

    def test_save_replaces_an_existing_version(self, store):
        key = "jobs/a/x.bin"
        store.save(key, writes(b"old content, longer than the new one"))
        size, sha = store.save(key, writes(b"new"))
        assert read(store, key) == b"new"
        assert (size, sha) == (3, hashlib.sha256(b"new").hexdigest())
        assert self.stored_keys(store) == [key]

    def test_a_writer_that_fails_leaves_no_file_and_no_temp(self, store):
        key = "jobs/a/checkpoints/epoch-0002.pt"
        with pytest.raises(Boom):
            store.save(key, failing_writer)
        assert not store.exists(key)
        assert self.stored_keys(store) == []

    def test_a_writer_that_fails_keeps_the_previous_version(self, store):
        key = "jobs/a/checkpoints/epoch-0002.pt"
        store.save(key, writes(b"the good old checkpoint"))
        with pytest.raises(Boom):
            store.save(key, failing_writer)
        assert read(store, key) == b"the good old checkpoint"
        assert self.stored_keys(store) == [key]

    def test_a_writer_that_fails_in_torch_save_keeps_the_previous_version(self, store):
        key = checkpoint_key("abc", 1)
        store.save(key, lambda f: torch.save({"w": torch.arange(4)}, f))

        class Unsaveable:
            def __reduce__(self):
                raise Boom("cannot pickle")

        with pytest.raises(Boom):
            store.save(key, lambda f: torch.save({"w": torch.zeros(2), "x": Unsaveable()}, f))
        with store.open(key) as f:
            assert torch.equal(torch.load(f, weights_only=True)["w"], torch.arange(4))
        assert self.stored_keys(store) == [key]

    def test_torch_save_through_the_hashing_writer_loads_back(self, store):
        blob = {"format": "x", "t": torch.randn(300, 200), "n": [1, 2.5, "s", None],
                "nested": {"ints": torch.arange(1000)}}
        key = checkpoint_key("0123456789abcdef0123456789abcdef", 7)
        size, sha = store.save(key, lambda f: torch.save(blob, f))
        data = read(store, key)
        assert size == len(data) and sha == hashlib.sha256(data).hexdigest()
        with store.open(key) as f:
            loaded = torch.load(f, weights_only=True)
        assert torch.equal(loaded["t"], blob["t"])
        assert torch.equal(loaded["nested"]["ints"], blob["nested"]["ints"])
        assert loaded["n"] == blob["n"]
        assert self.stored_keys(store) == [key]

    # ---- save_stream -------------------------------------------------------------------------

    @pytest.mark.parametrize("size", [0, 1, 1 << 20, (1 << 20) + 1, 3_000_000])
    def test_save_stream_up_to_the_cap(self, store, size):
        content = os.urandom(size)
        assert store.save_stream("datasets/d/upload", io.BytesIO(content), 3_000_000) == size
        assert read(store, "datasets/d/upload") == content
        assert self.stored_keys(store) == ["datasets/d/upload"]

    def test_save_stream_past_the_cap_stores_nothing_and_keeps_the_old_version(self, store):
        store.save("datasets/d/upload", writes(b"old"))
        with pytest.raises(TooLarge):
            store.save_stream("datasets/d/upload", io.BytesIO(b"x" * 2_500_000), 2_000_000)
        assert read(store, "datasets/d/upload") == b"old"
        with pytest.raises(TooLarge):
            store.save_stream("datasets/e/upload", io.BytesIO(b"x" * 1025), 1024)
        assert self.stored_keys(store) == ["datasets/d/upload"]

    # ---- keys --------------------------------------------------------------------------------

    @pytest.mark.parametrize("key", BAD_KEYS, ids=[repr(k) for k in BAD_KEYS])
    def test_bad_keys_raise_value_error_everywhere(self, store, key):
        with pytest.raises(ValueError):
            check_key(key)
        calls = [lambda: store.save(key, writes(b"x")), lambda: store.open(key),
                 lambda: store.exists(key), lambda: store.delete(key),
                 lambda: list(store.iter_bytes(key)),
                 lambda: store.save_stream(key, io.BytesIO(b"x"), 10),
                 lambda: store.local_file(key).__enter__()]
        if key != "a/":  # delete_prefix strips a trailing slash: "a/" names the folder "a"
            calls.append(lambda: store.delete_prefix(key))
        for call in calls:
            with pytest.raises(ValueError):
                call()
        assert self.stored_keys(store) == []

    @pytest.mark.parametrize("key", ["a\n", "jobs/a/x.pt\n"], ids=repr)
    def test_a_trailing_newline_is_not_a_valid_key(self, store, key):
        """'$' with .match() would accept one trailing newline."""
        with pytest.raises(ValueError):
            check_key(key)
        with pytest.raises(ValueError):
            store.save(key, writes(b"x"))

    @pytest.mark.parametrize("key", ["a", "jobs/abc/checkpoints/epoch-0001.pt", "A-Z_0.9/x.y-z",
                                     "a/b/c/d/e/f", "...", "a..b"])
    def test_good_keys(self, store, key):
        assert check_key(key) == key
        store.save(key, writes(b"x"))
        assert store.exists(key)
        assert self.stored_keys(store) == [key]

    # ---- reading and deleting ----------------------------------------------------------------

    @pytest.mark.parametrize("size, chunk_size", [(0, 1024), (1, 1024), (5000, 1024),
                                                  (4096, 1024), ((5 << 20) // 2, 1 << 20)])
    def test_iter_bytes_yields_the_whole_content_in_chunks(self, store, size, chunk_size):
        content = os.urandom(size)
        store.save("jobs/a/blob", writes(content))
        chunks = list(store.iter_bytes("jobs/a/blob", chunk_size=chunk_size))
        assert b"".join(chunks) == content
        assert all(len(c) == chunk_size for c in chunks[:-1])
        assert all(0 < len(c) <= chunk_size for c in chunks)
        assert len(chunks) == -(-size // chunk_size)

    def test_iter_bytes_default_chunk_size(self, store):
        content = os.urandom((1 << 20) + 10)
        store.save("k", writes(content))
        assert [len(c) for c in store.iter_bytes("k")] == [1 << 20, 10]

    def test_iter_bytes_of_a_missing_artifact(self, store):
        with pytest.raises(FileNotFoundError):
            list(store.iter_bytes("jobs/a/gone"))

    def test_open_and_exists(self, store):
        assert not store.exists("jobs/a/x")
        with pytest.raises(FileNotFoundError):
            store.open("jobs/a/x")
        store.save("jobs/a/x", writes(b"content"))
        with store.open("jobs/a/x") as f:
            assert f.read() == b"content"
            f.seek(3)  # torch.load seeks
            assert f.read() == b"tent"
        assert not store.exists("jobs/a")  # a folder is not an artifact
        assert self.stored_keys(store) == ["jobs/a/x"]

    def test_local_file(self, store):
        store.save("datasets/d/upload", writes(b"archive bytes"))
        with store.local_file("datasets/d/upload") as path:
            assert path.read_bytes() == b"archive bytes"
        with pytest.raises(FileNotFoundError):
            with store.local_file("datasets/d/gone"):
                pass
        assert self.stored_keys(store) == ["datasets/d/upload"]

    def test_delete(self, store):
        store.save("jobs/a/x", writes(b"1"))
        store.save("jobs/a/y", writes(b"2"))
        store.delete("jobs/a/x")
        assert not store.exists("jobs/a/x") and store.exists("jobs/a/y")
        store.delete("jobs/a/x")  # deleting what is gone is fine
        store.delete("jobs/never/there")
        assert self.stored_keys(store) == ["jobs/a/y"]

    def test_delete_prefix_removes_one_jobs_folder_only(self, store):
        for job in ("abc", "abcd", "ab", "other"):
            for epoch in (1, 2):
                store.save(checkpoint_key(job, epoch), writes(job.encode()))
        store.save("top-level.bin", writes(b"t"))
        store.delete_prefix(job_prefix("abc"))
        assert self.stored_keys(store) == sorted(
            [checkpoint_key(j, e) for j in ("abcd", "ab", "other") for e in (1, 2)]
            + ["top-level.bin"])
        for job in ("abcd", "ab", "other"):
            assert read(store, checkpoint_key(job, 1)) == job.encode()
        store.delete_prefix(job_prefix("ab") + "/")  # a trailing slash names the same folder
        assert not store.exists(checkpoint_key("ab", 1))
        assert store.exists(checkpoint_key("abcd", 1))
        store.delete_prefix(job_prefix("abc"))  # already gone: no error
        store.delete_prefix("top-level.bin")  # a single object
        assert not store.exists("top-level.bin")
        assert self.stored_keys(store) == sorted(
            [checkpoint_key(j, e) for j in ("abcd", "other") for e in (1, 2)])
