"""What `trainhub api` and `trainhub worker` refuse before they start: an artifact store they
cannot use is one `error:` line and exit code 1, not a traceback at the first checkpoint."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.procs import env_with, free_port


@pytest.mark.parametrize("command", [["api", "--port", "0"], ["worker"]])
def test_an_unreachable_bucket_stops_the_server_command_with_one_line(command):
    closed = free_port()
    env = env_with(TRAINHUB_ARTIFACT_URL="s3://trainhub-artifacts/prefix",
                   TRAINHUB_S3_ENDPOINT_URL=f"http://127.0.0.1:{closed}",
                   AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                   AWS_DEFAULT_REGION="us-east-1")
    done = subprocess.run([sys.executable, "-m", "cli", *command], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "TRAINHUB_ARTIFACT_URL" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
