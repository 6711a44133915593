"""The OpenAPI document declares credentials exactly when the API asks for them: with
TRAINHUB_AUTH=on a security scheme and a 401 on every protected operation; with
TRAINHUB_AUTH=off none (every caller is an admin there: a key would be ignored)."""
from __future__ import annotations

import pytest

from api.auth import is_public
from api.main import create_app
from core.config import get_settings

HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(autouse=True)
def fresh_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def document(monkeypatch, auth: str) -> dict:
    monkeypatch.setenv("TRAINHUB_AUTH", auth)
    get_settings.cache_clear()
    return create_app().openapi()


def operations(schema: dict):
    return [(path, method, op) for path, item in schema["paths"].items()
            for method, op in item.items() if method in HTTP_METHODS]


def test_auth_off_document_declares_no_credentials(monkeypatch):
    schema = document(monkeypatch, "off")
    assert "securitySchemes" not in schema.get("components", {})
    offenders = [f"{m.upper()} {p}" for p, m, op in operations(schema) if "security" in op]
    assert not offenders


def test_auth_on_document_declares_credentials_on_every_protected_operation(monkeypatch):
    schema = document(monkeypatch, "on")
    assert set(schema["components"]["securitySchemes"]) == {"apiKey", "session"}
    protected = [(p, m, op) for p, m, op in operations(schema) if not is_public(m.upper(), p)]
    assert len(protected) > 10
    missing = [f"{m.upper()} {p}" for p, m, op in protected
               if op.get("security") != [{"apiKey": []}, {"session": []}]
               or "401" not in op["responses"]]
    assert not missing
    public = [op for p, m, op in operations(schema) if is_public(m.upper(), p)]
    assert public and not any("security" in op for op in public)


@pytest.mark.parametrize("auth", ["on", "off"])
def test_document_is_built_once(monkeypatch, auth):
    monkeypatch.setenv("TRAINHUB_AUTH", auth)
    get_settings.cache_clear()
    app = create_app()
    assert app.openapi() is app.openapi()
