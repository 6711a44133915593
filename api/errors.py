"""One table from domain errors to HTTP statuses, the error body shapes, and the handlers;
no traceback ever reaches a client."""
from __future__ import annotations

import logging
import re
from functools import lru_cache
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from api.head import requested_method
from core.errors import (
    Conflict,
    FieldError,
    Forbidden,
    NotFound,
    TooLarge,
    Unauthorized,
    validator_reason,
)
from core.image_decode import NotAnImage
from core.queue import BrokerUnavailable
from core.quota_ledger import CapReached, RateLimited
from core.states import InvalidTransition
from core.text import ECHO_LIMIT, safe

log = logging.getLogger(__name__)

# Domain error -> HTTP status; the first matching class wins (subclasses before bases).
STATUS_BY_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (InvalidTransition, 409),
    (Conflict, 409),
    (TooLarge, 413),
    (NotAnImage, 415),
    (FieldError, 422),
    (RateLimited, 429),
    (CapReached, 409),  # or 429: the instance says (a cap that passes with time)
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
    described = {401: "no API key, or one that is unknown or revoked",
                 403: "the key does not allow this (an admin-only route)",
                 404: "no such resource", 409: "the resource's state does not allow it",
                 413: "too large", 415: "not an image", 422: "an invalid field",
                 429: "a rate limit or a tenant cap; Retry-After says when to try again",
                 503: "a backing service (database or broker) is unavailable"}
    return {status: {"model": ValidationErrorBody if status == 422 else ErrorMessage,
                     "description": described[status]} for status in statuses}


def field_problem(field: str, msg: str, type_: str = "value_error") -> dict:
    return {"field": field, "msg": safe(msg), "type": type_,
            "loc": ["body", *field.split(".")]}


def _loc_part(part):
    # A location can hold a client's own key (an unknown field's name): cut it, and make
    # it writable as UTF-8 (a lone surrogate in a key would fail the response otherwise).
    return part if isinstance(part, int) else safe(str(part)[:ECHO_LIMIT])


def _field(loc) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _invalid_json(err: dict, body) -> dict:
    """pydantic gives a character offset (loc ["body", 39]): say where, as a person reads a
    file, and why (json's own reason)."""
    offset = err["loc"][-1] if isinstance(err["loc"][-1], int) else 0
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    line, column = text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)
    reason = str((err.get("ctx") or {}).get("error") or "not valid JSON")
    return {"field": "body", "msg": safe(f"invalid JSON at line {line} column {column}: "
                                         f"{reason}"),
            "type": err["type"], "loc": ["body"]}


async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = []
    for err in exc.errors():
        if err["type"] == "json_invalid":
            detail.append(_invalid_json(err, exc.body))
            continue
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field; see GET /docs for the allowed fields"
        msg = validator_reason(msg)
        loc = [_loc_part(p) for p in err["loc"]]
        detail.append({"field": _field(loc), "msg": safe(msg), "type": err["type"], "loc": loc})
    return JSONResponse({"detail": detail}, status_code=422)


@lru_cache(maxsize=8)
def _path_patterns(paths: tuple[str, ...]) -> tuple[tuple[re.Pattern, str], ...]:
    return tuple((re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path))), path)
                 for path in paths)


def _allowed_methods(request: Request) -> list[str]:
    """Every method the app documents at this path, HEAD with GET (Starlette's own 405
    names only those of the first route whose path matched)."""
    paths = request.app.openapi().get("paths", {})
    methods: set[str] = set()
    for pattern, path in _path_patterns(tuple(paths)):
        if pattern.fullmatch(request.url.path):
            methods |= {m.upper() for m in paths[path] if m.upper() in _HTTP_METHODS}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


_HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"}


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's and FastAPI's own errors (unknown route, wrong method, a body that cannot
    be parsed, the body limit) in the documented shapes."""
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers or {})
    if exc.status_code == 400:
        # A body that cannot be parsed (malformed multipart, undecodable form data) is an
        # invalid request body, as malformed JSON is: a 422 in the list shape.
        problem = {"field": "body", "msg": safe(detail), "type": "body_invalid",
                   "loc": ["body"]}
        return JSONResponse({"detail": [problem]}, status_code=422)
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        if allowed:  # else (a route outside the OpenAPI document) Starlette's own list
            headers["Allow"] = ", ".join(allowed)
        detail = (f"{requested_method(request.scope)} is not allowed here; allowed: "
                  f"{headers.get('Allow')}")
    elif exc.status_code == 404 and detail == "Not Found":
        detail = "not found: no such route; see GET /docs for the routes"
    return JSONResponse({"detail": safe(detail)}, status_code=exc.status_code, headers=headers)


def status_for(exc: Exception) -> int | None:
    return next((status for cls, status in STATUS_BY_ERROR if isinstance(exc, cls)), None)


async def domain_error(_request: Request, exc: Exception) -> JSONResponse:
    status = status_for(exc)
    if status is None:
        return await unexpected(_request, exc)
    if isinstance(exc, FieldError):
        return JSONResponse({"detail": [field_problem(exc.field, exc.message)]}, status_code=422)
    headers = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="trainhub"'
    if getattr(exc, "retry_after", None) is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse({"detail": safe(str(exc))}, status_code=getattr(exc, "status", status),
                        headers=headers)


async def database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    log.error("database error: %s", exc)
    return JSONResponse({"detail": "the database is unavailable; try again shortly"},
                        status_code=503)


async def pool_exhausted(_request: Request, exc: Exception) -> JSONResponse:
    """Every pooled database connection stayed busy for the pool's timeout: the process is
    overloaded, not broken; the client may retry."""
    log.error("database pool exhausted: %s", exc)
    return JSONResponse({"detail": "the API is overloaded: no database connection came free "
                                   "in time; try again shortly"},
                        status_code=503, headers={"Retry-After": "2"})


async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    for cls, _status in STATUS_BY_ERROR:
        app.add_exception_handler(cls, domain_error)
    app.add_exception_handler(DBAPIError, database_unavailable)  # OperationalError included
    app.add_exception_handler(PoolTimeout, pool_exhausted)
    app.add_exception_handler(Exception, unexpected)
