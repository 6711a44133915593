"""One table from domain errors to HTTP statuses, the error body shapes, and the handlers;
no traceback ever reaches a client."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

from core.errors import Conflict, FieldError, NotFound, TooLarge
from core.images import NotAnImage
from core.queue import BrokerUnavailable
from core.states import InvalidTransition
from core.uploads.archives import UploadRejected

log = logging.getLogger(__name__)

# Domain error -> HTTP status; the first matching class wins (subclasses before bases).
STATUS_BY_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (NotFound, 404),
    (InvalidTransition, 409),
    (Conflict, 409),
    (TooLarge, 413),
    (NotAnImage, 415),
    (FieldError, 422),
    (UploadRejected, 422),
    (BrokerUnavailable, 503),
)


class ErrorMessage(BaseModel):
    """Every error but 422: one readable sentence."""

    detail: str


class FieldProblem(BaseModel):
    field: str  # dotted path of the offending field, e.g. hyperparameters.lr
    msg: str
    type: str
    loc: list[str | int]


class ValidationErrorBody(BaseModel):
    """422: one entry per invalid field."""

    detail: list[FieldProblem]


def responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI `responses=` for a route: each error status with its body's schema."""
    described = {404: "no such resource", 409: "the resource's state does not allow it",
                 413: "too large", 415: "not an image", 422: "an invalid field",
                 503: "a backing service (database or broker) is unavailable"}
    return {status: {"model": ValidationErrorBody if status == 422 else ErrorMessage,
                     "description": described[status]} for status in statuses}


def field_problem(field: str, msg: str, type_: str = "value_error") -> dict:
    return {"field": field, "msg": msg, "type": type_, "loc": ["body", *field.split(".")]}


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


def status_for(exc: Exception) -> int | None:
    return next((status for cls, status in STATUS_BY_ERROR if isinstance(exc, cls)), None)


async def domain_error(_request: Request, exc: Exception) -> JSONResponse:
    status = status_for(exc)
    if status is None:
        return await unexpected(_request, exc)
    if isinstance(exc, FieldError):
        return JSONResponse({"detail": [field_problem(exc.field, exc.message)]}, status_code=422)
    return JSONResponse({"detail": str(exc)}, status_code=status)


async def database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    log.error("database error: %s", exc)
    return JSONResponse({"detail": "the database is unavailable; try again shortly"},
                        status_code=503)


async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    for cls, _status in STATUS_BY_ERROR:
        app.add_exception_handler(cls, domain_error)
    app.add_exception_handler(DBAPIError, database_unavailable)  # OperationalError included
    app.add_exception_handler(Exception, unexpected)
