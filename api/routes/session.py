"""The web page's login: an API key, sent once in a body, becomes an HttpOnly session
cookie, so the page never holds the key and no key ever goes into a URL (a browser's
EventSource cannot send an Authorization header; it does send cookies)."""
from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from api.auth import SESSION_COOKIE, TenantDep
from api.deps import SessionDep
from api.errors import responses
from core import auth
from core.config import get_settings
from core.errors import Unauthorized

router = APIRouter(prefix="/session", tags=["session"])


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1, max_length=200, description="an API key")


class Caller(BaseModel):
    user: str
    is_admin: bool
    auth: str  # on | off
    expires_at: datetime | None = None  # the session's end, when it is a web session


@router.post("", response_model=Caller, responses=responses(401, 422))
def log_in(login: Login, request: Request, response: Response, session: SessionDep) -> Caller:
    """Set the session cookie (HttpOnly, SameSite=Strict) for the key's user."""
    settings = get_settings()
    if settings.auth == "off":
        return Caller(user="local", is_admin=True, auth="off")
    tenant = auth.tenant_for_key(session, login.key.strip())
    if tenant is None:
        raise Unauthorized("the API key is not valid (unknown or revoked)")
    token, expires_at = auth.create_web_session(session, tenant, settings.session_hours)
    session.commit()  # before the cookie goes out: the next request must find it
    max_age = int(settings.session_hours * 3600)
    response.set_cookie(SESSION_COOKIE, token, max_age=max_age, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return Caller(user=tenant.name, is_admin=tenant.is_admin, auth="on",
                  expires_at=expires_at)


@router.get("", response_model=Caller, responses=responses(401))
def who_am_i(tenant: TenantDep) -> Caller:
    """The user the request's key or cookie belongs to."""
    return Caller(user=tenant.name, is_admin=tenant.is_admin, auth=get_settings().auth)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT, responses=responses(401))
def log_out(request: Request, _tenant: TenantDep, session: SessionDep) -> Response:
    """End the web session (its cookie stops working at once)."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        auth.end_web_session(session, token)
        session.commit()
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
