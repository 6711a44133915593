"""Liveness plus reachability of the database, the broker and the live channel."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.schemas import Health
from core import events
from core.config import get_settings
from core.db import get_engine
from core.queue import ping_broker

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


@router.get("/health", response_model=Health,
            responses={503: {"model": Health, "description": "a backing service is down"}})
def read_health() -> JSONResponse:
    settings = get_settings()
    checks = {"database": _check(_database), "broker": _check(ping_broker)}
    if settings.redis_url:
        checks["events"] = _check(lambda: events.connect(settings.redis_url).ping())
    healthy = all(v == "ok" for v in checks.values())
    down = [name for name, state in checks.items() if state != "ok"]
    body = Health(status="ok" if healthy else "degraded", **checks,
                  detail=f"unavailable: {', '.join(down)}" if down else None)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if healthy else 503)
