"""Who is calling: every route but the public ones needs an API key (`Authorization:
Bearer <key>`) or the web page's session cookie, which stands for a key.

`authenticate` runs before every route (an app-wide dependency), so a new route is
protected unless it is listed in PUBLIC_ROUTES. Routes read the caller with TenantDep and
load what they serve through core.tenancy.
"""
from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from sqlalchemy.orm import Session

from api.reads import run_read
from core import auth
from core.config import get_settings
from core.errors import Forbidden, Unauthorized
from core.tenancy import LOCAL_ADMIN, Tenant

log = logging.getLogger(__name__)

SESSION_COOKIE = "trainhub_session"
# (method, route path) answered without credentials: liveness, the web page's shell, and
# the login that turns a key into a session cookie.
PUBLIC_ROUTES = frozenset({("GET", "/health"), ("GET", "/"), ("POST", "/session")})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_public(method: str, path: str) -> bool:
    return (method, path) in PUBLIC_ROUTES or (method == "HEAD" and ("GET", path) in
                                               PUBLIC_ROUTES)


async def credentials_tenant(request: Request) -> Tenant:
    """The caller by its Bearer key, else by its session cookie; Unauthorized if neither.
    The lookup goes through api.reads: on the event loop with PostgreSQL."""
    if get_settings().auth == "off":
        return LOCAL_ADMIN
    key, cookie = _presented(request)
    return _checked(request, cookie, await run_read(request, _lookup, key, cookie))


def _presented(request: Request) -> tuple[str | None, str | None]:
    """(API key, session cookie) as the request presents them: a malformed Authorization
    header, or neither credential, is Unauthorized."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("the Authorization header must be `Bearer <API key>`")
        return key.strip(), None
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return None, cookie
    raise Unauthorized("an API key is required: send `Authorization: Bearer <key>` "
                       "(`trainhub admin create-key USER` makes one)")


def _lookup(session: Session, key: str | None, cookie: str | None) -> Tenant | None:
    return (auth.tenant_for_key(session, key) if key is not None
            else auth.tenant_for_session(session, cookie))


def _checked(request: Request, cookie: str | None, tenant: Tenant | None) -> Tenant:
    if tenant is None and cookie is None:
        raise Unauthorized("the API key is not valid (unknown or revoked)")
    if tenant is None:
        raise Unauthorized("the session has ended; log in again with an API key")
    if cookie is not None:
        _check_same_origin(request)
    return tenant


def _check_same_origin(request: Request) -> None:
    """A cookie rides along on any request the browser sends: a state-changing one must come
    from this origin (SameSite=Strict already keeps other sites' requests cookie-less)."""
    if request.method not in UNSAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden("a cross-origin request cannot use the session cookie")


def needs_credentials(request: Request) -> bool:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return path is not None and not is_public(request.method, path)


async def authenticate(request: Request) -> None:
    if needs_credentials(request):
        request.state.tenant = await credentials_tenant(request)


async def current_tenant(request: Request) -> Tenant:
    # The tenant authenticate found, without another lookup.
    tenant = getattr(request.state, "tenant", None)
    if tenant is None:  # a public route asking who calls: it must authenticate itself
        tenant = request.state.tenant = await credentials_tenant(request)
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]


def require_admin(tenant: TenantDep) -> Tenant:
    if not tenant.is_admin:
        raise Forbidden("this route needs an admin key")
    return tenant


def install_openapi(app: FastAPI) -> None:
    """Document the credentials: a security scheme on every protected operation, and its
    401 answer. Only when authentication is on: with TRAINHUB_AUTH=off no operation needs
    credentials, and a document that asked for them would promise a 401 the API never gives
    (a fuzzer sending a bad key would find it "accepted")."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            if get_settings().auth == "on":
                document_credentials(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def document_credentials(schema: dict) -> None:
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update({
        "apiKey": {"type": "http", "scheme": "bearer",
                   "description": "an API key: `trainhub admin create-key USER`"},
        "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                    "description": "the web page's login (POST /session)"}})
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if is_public(method.upper(), path):
                continue
            operation["security"] = [{"apiKey": []}, {"session": []}]
            operation.setdefault("responses", {}).setdefault("401", {
                "description": "no API key, or one that is unknown or revoked",
                "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/ErrorMessage"}}}})
