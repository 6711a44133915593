"""Assembles the FastAPI app: routers, error handlers, schema upgrade at start."""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from api import deps, errors, limits, observability
from api.routes import (
    catalog,
    checkpoints,
    datasets,
    events,
    health,
    jobs,
    logs,
    metrics,
    monitoring,
    pages,
    predict,
)
from core.db import upgrade_schema


@asynccontextmanager
async def lifespan(_app: FastAPI):
    upgrade_schema()  # under a lock: API and workers may start at the same moment
    yield


def create_app() -> FastAPI:
    app = FastAPI(title="trainhub", version="0.1.0", lifespan=lifespan,
                  description="Training as a service for PyTorch.",
                  dependencies=[Depends(deps.reject_unknown_query)])
    for router in (jobs.router, metrics.router, events.router, logs.router, checkpoints.router,
                   predict.router, datasets.router, catalog.router, health.router,
                   monitoring.router, pages.router):
        app.include_router(router)
    errors.install(app)
    app.add_middleware(limits.BodyLimit)
    app.add_middleware(observability.RequestTimer)
    return app


app = create_app()
