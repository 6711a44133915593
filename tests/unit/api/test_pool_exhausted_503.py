"""A request that found no free pooled database connection in time is the API's overload,
answered 503 with Retry-After, never a 500."""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api import errors


def test_a_pool_timeout_is_503_with_retry_after():
    app = FastAPI()
    errors.install(app)

    @app.get("/busy")
    def busy():
        raise PoolTimeout("QueuePool limit of size 15 overflow 15 reached")

    response = TestClient(app, raise_server_exceptions=False).get("/busy")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert "overloaded" in response.json()["detail"]
