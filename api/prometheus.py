"""Prometheus metrics of the API: request and /predict durations (histograms, shared by
several API processes through prometheus-client's multiprocess mode when
PROMETHEUS_MULTIPROC_DIR is set), and job, sweep and trial counts read from the database at
scrape time, so every process answers the same."""
from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from core.db import session_scope
from core.states import JobStatus, SweepStatus
from core.tables import Job, MetricPoint, Sweep

REQUEST_DURATION = Histogram("trainhub_request_duration_seconds",
                             "Time to answer an HTTP request, by route template",
                             ["method", "route", "status"])
PREDICT_DURATION = Histogram("trainhub_predict_duration_seconds",
                             "Time to answer POST /predict (decode, model, forward pass)",
                             buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
EVENT_STREAMS = Gauge("trainhub_event_streams", "Open GET /jobs/{id}/events streams",
                      multiprocess_mode="livesum")


def _count_by_status(session, status_column, *where) -> dict[str, int]:
    """Rows by their status, in one grouped query."""
    return dict(session.execute(select(status_column, func.count()).where(*where)
                                .group_by(status_column)).all())


def _by_status(name: str, documentation: str, statuses, counts: dict[str, int]):
    """A gauge with a series for every status, 0 where no row has it: a status nobody is in
    reads as 0 rather than as a gap."""
    family = GaugeMetricFamily(name, documentation, labels=["status"])
    for status in statuses:
        family.add_metric([status.value], counts.get(status.value, 0))
    return family


class DatabaseCollector:
    """Job, sweep and trial counts by status, queue depth and points written, from the
    database."""

    def collect(self):
        with session_scope() as session:
            by_status = _count_by_status(session, Job.status)
            sweeps = _count_by_status(session, Sweep.status)
            trials = _count_by_status(session, Job.status, Job.sweep_id.is_not(None))
            points = session.scalar(select(func.count()).select_from(MetricPoint)) or 0
        yield _by_status("trainhub_jobs", "Jobs by status", JobStatus, by_status)
        yield GaugeMetricFamily("trainhub_queue_depth", "Jobs waiting for a worker (queued)",
                                value=by_status.get(JobStatus.queued.value, 0))
        yield CounterMetricFamily("trainhub_points_written", "Metric points stored",
                                  value=points)
        yield _by_status("trainhub_sweeps", "Sweeps by status", SweepStatus, sweeps)
        # Trials are jobs: trainhub_jobs counts them too.
        yield _by_status("trainhub_sweep_trials", "Sweep trials (jobs with a sweep) by status",
                         JobStatus, trials)


def exposition() -> bytes:
    """The text format, for every API process at once when in multiprocess mode."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        for metric in (REQUEST_DURATION, PREDICT_DURATION, EVENT_STREAMS):
            registry.register(metric)
    registry.register(DatabaseCollector())
    return generate_latest(registry)


class RequestTimer:
    """ASGI middleware: `Server-Timing: app;dur=<ms>` (time inside the app) on every
    response, and one histogram observation per request, labelled by route template (not
    the raw path, whose ids would make a series each). Plain ASGI rather than
    @app.middleware("http"), whose wrapping costs more than a small /predict request."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def recorded_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                ms = (time.perf_counter() - started) * 1000
                message["headers"] = [*message.get("headers", []),
                                      (b"server-timing", f"app;dur={ms:.2f}".encode())]
            await send(message)

        try:
            await self.app(scope, receive, recorded_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            REQUEST_DURATION.labels(scope["method"], template, str(status["code"])).observe(
                elapsed)
            if template == "/predict":
                PREDICT_DURATION.observe(elapsed)
