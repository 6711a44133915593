"""Liveness plus reachability of the database, the broker and the live channel."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from core import events
from core.config import get_settings
from core.db import get_engine

router = APIRouter(tags=["health"])


def _check(probe) -> str:
    try:
        probe()
        return "ok"
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {exc}"[:300]


def _database() -> None:
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))


def _broker() -> None:
    from worker.celery_app import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=3)


@router.get("/health")
def read_health() -> JSONResponse:
    settings = get_settings()
    checks = {"database": _check(_database), "broker": _check(_broker)}
    if settings.redis_url:
        checks["events"] = _check(lambda: events.connect(settings.redis_url).ping())
    healthy = all(v == "ok" for v in checks.values())
    body = {"status": "ok" if healthy else "degraded", **checks}
    return JSONResponse(body, status_code=200 if healthy else 503)
