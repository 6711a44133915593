"""A real S3-protocol server for tests: moto's standalone server in a process of its own.

Use the `s3_server` fixture (import it into the test module); every test makes its own
bucket or prefix, so one server serves the whole session. Processes the tests start reach
it with `s3_env(server, bucket)` in their environment.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.procs import free_port

# moto accepts any credentials; boto3 insists on having some, and on a region.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
# Keep boto3 off the developer's own ~/.aws files and off instance metadata.
ISOLATION_ENV = {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                 "AWS_EC2_METADATA_DISABLED": "true"}


class S3Server:
    def __init__(self, log_path: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_file = open(log_path, "wb")
        self.log_path = log_path
        self._client = None
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **AWS_ENV, **ISOLATION_ENV})
        self._wait()

    def _wait(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"moto server exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"moto server did not answer in {timeout}s")

    def client(self):
        """One client for the whole session (making one loads botocore's models: slow)."""
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self):
        import boto3

        return boto3.session.Session(
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=AWS_ENV["AWS_DEFAULT_REGION"]).client("s3", endpoint_url=self.endpoint)

    def new_bucket(self, prefix: str = "trainhub-test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                          Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", ()))

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log_file.close()


def s3_env(server: S3Server, url: str) -> dict[str, str]:
    """The environment of a trainhub process that keeps its artifacts at url on server."""
    return {**AWS_ENV, **ISOLATION_ENV, "TRAINHUB_ARTIFACT_URL": url,
            "TRAINHUB_S3_ENDPOINT_URL": server.endpoint}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()
