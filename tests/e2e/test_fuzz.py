"""Acceptance R5: schemathesis over the API's own OpenAPI document finds nothing.

A real API process (its own Postgres database, an idle queue, no worker: the jobs the fuzzer
submits stay queued) gets every operation of /openapi.json, in schemathesis's coverage,
fuzzing and stateful phases (schema-built requests, then sequences that follow the links
between operations: submit a job, read it, cancel it, delete it ...), within a time budget.
Checks: no 5xx; every status is documented; every body, header and media type is the one
documented; invalid input is refused; a created resource can be read and a deleted one is
gone; a method a path does not serve is a 405 naming the ones it does. The schema names the
models and datasets, so the fuzzer builds valid jobs too: at least one must be accepted,
counted in the database (the stateful phase deletes many of the jobs it creates, so a
trigger counts every insert).

The API runs with authentication off (the tests' default): every operation is reachable
without rate limits or tenant caps cutting the fuzzing short, and its document declares no
credentials, as none are asked for. The credentials contract of an auth-on API (a security
scheme and a 401 on every protected operation, and the 401s themselves) is tested in
tests/e2e/test_isolation.py, tests/integration/api/test_body_limits.py and
tests/unit/api/test_openapi_security.py."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.conftest import create_database
from tests.procs import env_with, start_api

pytestmark = pytest.mark.slow

TIME_BUDGET_SECONDS = 120  # the whole schemathesis run
MAX_EXAMPLES = 40  # per operation and phase
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance",
          "negative_data_rejection", "unsupported_method", "allow_header_conformance",
          "use_after_free", "ensure_resource_availability"]

# A job's event stream (GET /jobs/{id}/events) lasts as long as the job, and these jobs
# never run: schemathesis reads a few events of a stream and then lets it go.
CONFIG = """\
max-stream-events = 2
request-timeout = 15
"""

COUNT_INSERTS = """
CREATE TABLE fuzz_jobs_created (job_id text PRIMARY KEY);
CREATE FUNCTION fuzz_count_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO fuzz_jobs_created VALUES (NEW.id); RETURN NEW; END $$;
CREATE TRIGGER fuzz_count_job AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION fuzz_count_job();
"""


def test_schemathesis_finds_no_failure(tmp_path: Path):
    db_url = create_database("trainhub_fuzz")
    data = tmp_path / "data"
    env = env_with(TRAINHUB_DATABASE_URL=db_url, TRAINHUB_DATA_DIR=str(data),
                   TRAINHUB_QUEUE=f"fuzz-{uuid.uuid4().hex[:8]}",
                   # Small limits, so that the fuzzer's bodies meet them.
                   TRAINHUB_DATASET_MAX_UPLOAD_BYTES=str(1024 * 1024))
    proc, base = start_api(env, tmp_path)  # the API has migrated the schema by now
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(COUNT_INSERTS)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    output = tmp_path / "schemathesis.log"
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
               f"{base}/openapi.json", "--checks", ",".join(CHECKS),
               "--phases", "examples,coverage,fuzzing,stateful",
               "--max-time", str(TIME_BUDGET_SECONDS), "--max-examples", str(MAX_EXAMPLES),
               # One worker: hypothesis describing its strategies from several threads at
               # once trips CPython 3.11's ast module ("recursion depth mismatch").
               "--workers", "1", "--generation-database", "none", "--no-color",
               "--report", "junit", "--report-dir", str(tmp_path / "report")]
    started = time.monotonic()
    try:
        with open(output, "wb") as log:
            result = subprocess.run(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "NO_COLOR": "1"},
                                    timeout=TIME_BUDGET_SECONDS + 240)
    finally:
        api_log = proc.log()
        proc.stop()
    took = time.monotonic() - started
    report = output.read_text(errors="replace")
    print(f"\nschemathesis ran {took:.0f} s:\n{report[-2500:]}")
    assert result.returncode == 0, report[-12000:] + "\n--- API log ---\n" + api_log[-3000:]
    assert "Traceback" not in api_log, api_log[-5000:]
    assert not re.search(r'HTTP/1\.1" 5\d\d', api_log), api_log[-5000:]

    with psycopg.connect(db_url) as conn:
        (created,), = conn.execute("SELECT count(*) FROM fuzz_jobs_created").fetchall()
        (left,), = conn.execute("SELECT count(*) FROM jobs").fetchall()
        (processing,), = conn.execute(
            "SELECT count(*) FROM datasets WHERE status = 'processing'").fetchall()
        kept = {row[0] for row in conn.execute("SELECT id FROM datasets")}
    print(f"jobs accepted: {created} ({left} still in the database)")
    assert created >= 1, "the fuzzer never built a job the API accepted"
    assert processing == 0
    # No upload left files behind without its row.
    uploads = data / "artifacts" / "datasets"
    orphans = [p.name for p in uploads.iterdir() if p.name not in kept] if uploads.exists() else []
    assert not orphans, orphans
