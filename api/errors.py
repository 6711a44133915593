"""One table from domain errors to HTTP statuses; no traceback ever reaches a client."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError

from core.states import InvalidTransition

log = logging.getLogger(__name__)


def _field(loc) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    return ".".join(parts) or "body"


async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = []
    for err in exc.errors():
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field; see GET /docs for the allowed fields"
        detail.append({"field": _field(err["loc"]), "msg": msg, "type": err["type"],
                       "loc": list(err["loc"])})
    return JSONResponse({"detail": detail}, status_code=422)


async def invalid_transition(_request: Request, exc: InvalidTransition) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    log.error("database error: %s", exc)
    return JSONResponse({"detail": "the database is unavailable; try again shortly"},
                        status_code=503)


async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(InvalidTransition, invalid_transition)
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(DBAPIError, database_unavailable)
    app.add_exception_handler(Exception, unexpected)


def field_error(field: str, msg: str, status: int = 422):
    """An HTTPException shaped like request-validation errors, for checks made in handlers."""
    from fastapi import HTTPException

    return HTTPException(status, [{"field": field, "msg": msg, "type": "value_error",
                                   "loc": ["body", *field.split(".")]}])
