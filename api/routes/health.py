"""Liveness plus reachability of the database, the broker and the live channel."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.deps import SessionDep
from api.schemas import Health
from core import events
from core.config import get_settings
from core.queue import ping_broker

router = APIRouter(tags=["health"])


def _check(probe) -> str:
    try:
        probe()
        return "ok"
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {exc}"[:300]


def _database(session: Session) -> None:
    session.execute(text("SELECT 1"))
    session.rollback()  # its connection goes back at once


@router.get("/health", response_model=Health,
            responses={503: {"model": Health, "description": "a backing service is down"}})
def read_health(session: SessionDep) -> JSONResponse:
    settings = get_settings()
    checks = {"database": _check(lambda: _database(session)), "broker": _check(ping_broker)}
    if settings.redis_url:
        checks["events"] = _check(lambda: events.connect(settings.redis_url).ping())
    healthy = all(v == "ok" for v in checks.values())
    down = [name for name, state in checks.items() if state != "ok"]
    body = Health(status="ok" if healthy else "degraded", **checks,
                  detail=f"unavailable: {', '.join(down)}" if down else None)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if healthy else 503)
