"""HTTP middleware: cap every request body while it streams in (uploads have their own,
larger caps; every other route takes at most TRAINHUB_JSON_MAX_BYTES)."""
from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from core.config import get_settings

# Multipart framing and form fields around the files: generous; per-file checks are exact.
_MULTIPART_OVERHEAD = 64 * 1024


BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def body_limit(path: str) -> int:
    settings = get_settings()
    if path == "/predict":
        return settings.predict_max_bytes * settings.predict_max_images + _MULTIPART_OVERHEAD
    if path == "/datasets":
        return settings.dataset_max_upload_bytes + _MULTIPART_OVERHEAD
    if path == "/models":  # a program's two archives, the train and the eval one
        return 2 * settings.program_max_upload_bytes + _MULTIPART_OVERHEAD
    return settings.json_max_bytes


class BodyLimit:
    """413 for a body over the route's limit: at once from Content-Length, else while it
    streams, so an upload without a length cannot fill the disk either."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        limit = (body_limit(scope["path"])
                 if scope["type"] == "http" and scope["method"] in BODY_METHODS else None)
        if limit is None:
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            response = JSONResponse({"detail": f"request body is {int(length)} bytes; the limit "
                                               f"for {scope['path']} is {limit}"}, status_code=413)
            return await response(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                # FastAPI re-raises an HTTPException from body parsing as it is.
                raise HTTPException(413, f"request body is over the limit for "
                                         f"{scope['path']} ({limit} bytes)")
            return message

        await self.app(scope, counted_receive, send)
