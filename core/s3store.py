"""The artifact store in an S3-compatible bucket (AWS S3, MinIO, ...), with boto3.

TRAINHUB_ARTIFACT_URL=s3://bucket/prefix puts every artifact key under `prefix/` in `bucket`;
TRAINHUB_S3_ENDPOINT_URL names another endpoint than AWS (path-style addressing then).
Credentials and region come from boto3's own chain (AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, an instance role; AWS_DEFAULT_REGION).

Nothing is held wholly in memory: a save is written to a temporary file, then uploaded
(multipart past 8 MiB); a read downloads to a temporary file; a download streams the
GetObject body. Temporary files are anonymous or removed when done.
"""
from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from core.files import naming_a_full_disk
from core.store_protocol import (
    ArtifactStoreError,
    HashingWriter,
    StoreConfigError,
    check_key,
    copy_capped,
)

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MISSING = {"404", "NoSuchKey", "NotFound"}
_DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, key prefix) of s3://bucket[/prefix]; StoreConfigError naming the setting."""
    def bad(why: str) -> StoreConfigError:
        return StoreConfigError(f"TRAINHUB_ARTIFACT_URL={url!r} is not usable: {why} "
                                "(expected s3://bucket or s3://bucket/prefix)")

    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise bad("only s3:// URLs are supported (unset it for the local folder)")
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        raise bad("no credentials, port, query or fragment belong in it")
    if not _BUCKET.fullmatch(parts.netloc):
        raise bad(f"{parts.netloc!r} is not a bucket name (3-63 lowercase letters, digits, "
                  "dots and hyphens)")
    prefix = parts.path.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except ValueError:
            raise bad(f"the prefix {prefix!r} may hold only letters, digits, '_', '.', '-' "
                      "and '/' between names") from None
    return parts.netloc, prefix


def make_client(endpoint_url: str | None = None, *, attempts: int = 5):
    """An S3 client from boto3's credential chain. For a custom endpoint (MinIO, moto):
    path-style addressing, which such servers serve more often than bucket subdomains, and
    checksums only where S3 requires them (some servers refuse the extra headers boto3 adds
    by default), unless AWS_REQUEST_CHECKSUM_CALCULATION / AWS_RESPONSE_CHECKSUM_VALIDATION
    say otherwise."""
    custom: dict = {}
    if endpoint_url:
        custom["s3"] = {"addressing_style": "path"}
        for option in ("request_checksum_calculation", "response_checksum_validation"):
            if not os.environ.get(f"AWS_{option.upper()}"):
                custom[option] = "when_required"
    config = Config(retries={"max_attempts": attempts, "mode": "standard"},
                    connect_timeout=10, read_timeout=120, max_pool_connections=16, **custom)
    try:
        return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
    except ValueError as exc:  # e.g. an endpoint URL botocore cannot parse
        raise StoreConfigError(f"TRAINHUB_S3_ENDPOINT_URL={endpoint_url!r} is not usable: "
                               f"{exc}") from None


class S3ArtifactStore:
    def __init__(self, bucket: str, prefix: str = "", *, client=None,
                 endpoint_url: str | None = None, tmp_dir: Path | None = None):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = client if client is not None else make_client(endpoint_url)
        self.tmp_dir = tmp_dir

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None,
                 tmp_dir: Path | None = None, check: bool = False) -> S3ArtifactStore:
        """The store of TRAINHUB_ARTIFACT_URL; with check, first make sure the bucket is
        there and reachable (StoreConfigError, one line, if not)."""
        bucket, prefix = parse_url(url)
        if check:
            client = make_client(endpoint_url, attempts=2)
            check_bucket(client, bucket, url, endpoint_url)
        else:
            client = make_client(endpoint_url)
        return cls(bucket, prefix, client=client, tmp_dir=tmp_dir)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def object_key(self, key: str) -> str:
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    # ---- writing ---------------------------------------------------------------------------

    def save(self, key: str, write: Callable[[BinaryIO], None]) -> tuple[int, str]:
        """write() fills a temporary file; only a complete one is uploaded, in one PUT or a
        multipart upload, so readers see the old object or the whole new one."""
        name = self.object_key(key)
        with naming_a_full_disk(self.tmp_dir or tempfile.gettempdir()), \
                self._temp_file() as tmp:
            writer = HashingWriter(tmp)
            write(writer)  # type: ignore[arg-type]
            tmp.flush()
            tmp.seek(0)
            with self._errors(key):
                self.client.upload_fileobj(tmp, self.bucket, name)
        return writer.size, writer.sha.hexdigest()

    def save_stream(self, key: str, source: BinaryIO, max_bytes: int) -> int:
        size, _ = self.save(key, lambda out: copy_capped(source, out, max_bytes))
        return size

    def delete(self, key: str) -> None:
        name = self.object_key(key)
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=name)

    def delete_prefix(self, prefix: str) -> None:
        """The object named prefix and every object under `prefix/` (never `prefixX/...`)."""
        base = self.object_key(prefix.rstrip("/"))
        names = [base]
        with self._errors(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base + "/")
            names += [obj["Key"] for page in pages for obj in page.get("Contents", ())]
            for start in range(0, len(names), _DELETE_BATCH):
                batch = names[start:start + _DELETE_BATCH]
                answer = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": n} for n in batch], "Quiet": True})
                errors = answer.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise ArtifactStoreError(
                        f"{self.url}: {len(errors)} object(s) under {prefix} not deleted, "
                        f"e.g. {first.get('Key')}: {first.get('Code')} {first.get('Message')}")

    # ---- reading ---------------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        """A seekable local copy (torch.load needs one), removed when closed."""
        name = self.object_key(key)
        tmp = self._temp_file()
        try:
            with self._errors(key):
                self.client.download_fileobj(self.bucket, name, tmp)
            tmp.seek(0)
        except BaseException:
            tmp.close()
            raise
        return tmp  # type: ignore[return-value]

    def iter_bytes(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        name = self.object_key(key)
        with self._errors(key):
            body = self.client.get_object(Bucket=self.bucket, Key=name)["Body"]
        try:
            while True:
                with self._errors(key):
                    chunk = body.read(chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    def exists(self, key: str) -> bool:
        name = self.object_key(key)
        try:
            with self._errors(key):
                self.client.head_object(Bucket=self.bucket, Key=name)
        except FileNotFoundError:
            return False
        return True

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        """Downloaded to a temporary file that is removed when the context ends."""
        name = self.object_key(key)
        fd, path = tempfile.mkstemp(prefix=".download-", dir=self._tmp_dir())
        os.close(fd)
        try:
            with self._errors(key):
                self.client.download_file(self.bucket, name, path)
            yield Path(path)
        finally:
            Path(path).unlink(missing_ok=True)

    # ---- helpers ---------------------------------------------------------------------------

    def _tmp_dir(self) -> str | None:
        if self.tmp_dir is None:
            return None
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return str(self.tmp_dir)

    def _temp_file(self):
        """An anonymous temporary file: gone once closed, or if the process dies."""
        return tempfile.TemporaryFile(dir=self._tmp_dir())

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """A missing object as FileNotFoundError, any other S3 failure as
        ArtifactStoreError (both OSErrors, as a local disk's failures are)."""
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if str(error.get("Code")) in _MISSING:
                raise FileNotFoundError(f"artifact {key} is missing") from None
            raise ArtifactStoreError(f"{self.url}: {key}: {error.get('Code')} "
                                     f"{error.get('Message', '')}".rstrip()) from exc
        except BotoCoreError as exc:
            raise ArtifactStoreError(f"{self.url}: {key}: {exc}") from exc


def check_bucket(client, bucket: str, url: str, endpoint_url: str | None) -> None:
    """HeadBucket, with every way it fails said in one line that names the setting."""
    where = f"TRAINHUB_ARTIFACT_URL={url}" + (
        f" at TRAINHUB_S3_ENDPOINT_URL={endpoint_url}" if endpoint_url else "")
    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError:
        raise StoreConfigError(f"{where}: no S3 credentials found (set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)") from None
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in _MISSING or code == "NoSuchBucket":
            raise StoreConfigError(f"{where}: bucket {bucket!r} does not exist") from None
        if code in ("403", "AccessDenied", "Forbidden"):
            raise StoreConfigError(f"{where}: access to bucket {bucket!r} denied (check the "
                                   "credentials and the bucket's policy)") from None
        raise StoreConfigError(f"{where}: HeadBucket failed: {code} "
                               f"{exc.response.get('Error', {}).get('Message', '')}".rstrip()
                               ) from None
    except BotoCoreError as exc:
        raise StoreConfigError(f"{where}: cannot reach the S3 endpoint: {exc}") from None
