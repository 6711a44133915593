"""HEAD on every GET route: the GET's status and headers, and no body (RFC 9110, 9.3.2).

Starlette's own routes take HEAD wherever they take GET; FastAPI's take only the methods they
declare, so every HEAD was a 405. Declaring HEAD on each route would put a HEAD operation
beside each GET one in the OpenAPI document, with a body HEAD never has and the GET's
operationId; instead a HEAD request runs as the GET it stands for, and its response ends
after the headers. The server still sees a HEAD: it sends no body, and since the response
is complete, a stream (GET /jobs/{id}/events) is told the client left and stops.
"""
from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# In the scope of a HEAD request that runs as a GET, for what names the method to a client
# (a 405's message).
HEAD_SCOPE_KEY = "trainhub.head"


def requested_method(scope: Scope) -> str:
    return "HEAD" if scope.get(HEAD_SCOPE_KEY) else scope["method"]


class HeadAsGet:
    """ASGI middleware, the outermost: the route and every middleware see the GET (request
    metrics count it as one); the server sees the HEAD."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)
        complete = False

        async def headers_only(message: Message) -> None:
            nonlocal complete
            if complete:
                return  # the rest of the GET's body
            if message["type"] == "http.response.body":
                complete = True
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        # A copy: the server's own scope keeps the HEAD it answers (no body, its access log).
        await self.app({**scope, "method": "GET", HEAD_SCOPE_KEY: True}, receive,
                       headers_only)
