"""Assembles the FastAPI app: routers, error handlers, schema upgrade at start."""
from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api import access_log, auth, body_limits, deps, errors, head, prometheus, reads
from api.routes import (
    checkpoints,
    datasets,
    docs,
    events,
    export,
    health,
    jobs,
    logs,
    metrics,
    pages,
    predict,
    session,
    states,
    sweeps,
    workers,
)
from api.routes import (
    models as models_route,
)
from api.routes import (
    prometheus as prometheus_route,
)
from core.config import get_settings
from core.db import upgrade_schema

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(_app: FastAPI):
    upgrade_schema()  # under a lock: API and workers may start at the same moment
    if get_settings().auth == "off":
        log.warning("AUTHENTICATION IS OFF (TRAINHUB_AUTH=off): every caller is an admin; "
                    "serve only on 127.0.0.1")
    reads.open_read_engine(_app)
    # What the process holds by now (torch, the app, ~270,000 objects) lives as long as it
    # does: out of the collector's sight, a full collection no longer scans it. One took
    # ~100 ms on the event loop, and put GET /jobs/{id}'s p99 at 230 ms under load.
    gc.freeze()
    try:
        yield
    finally:
        await reads.close_read_engine(_app)


def create_app() -> FastAPI:
    app = FastAPI(title="trainhub", version="0.1.0", lifespan=lifespan,
                  description="Training as a service for PyTorch.",
                  docs_url=None, redoc_url=None,  # self-hosted: api/routes/docs.py
                  # Credentials first: a caller without them learns nothing, not even a 422.
                  dependencies=[Depends(auth.authenticate),
                                Depends(deps.reject_unknown_query)])
    for router in (session.router, jobs.router, metrics.router, events.router, logs.router, checkpoints.router,
                   export.router,
                   predict.router, datasets.router, models_route.router, health.router,
                   workers.router, states.router, prometheus_route.router, sweeps.router,
                   pages.router):
        app.include_router(router)
    docs.install(app)
    errors.install(app)
    auth.install_openapi(app)
    app.add_middleware(body_limits.BodyLimit)
    origins = get_settings().cors_origins
    if origins:  # off unless configured: browsers on other origins get no access
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_credentials=False,
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key",
                                          "Last-Event-ID"],
                           expose_headers=["Location", "Retry-After"])
    app.add_middleware(prometheus.RequestTimer)
    app.add_middleware(head.HeadAsGet)
    access_log.apply_access_log_policy(get_settings().access_log)
    return app


app = create_app()
