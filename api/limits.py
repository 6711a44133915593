"""HTTP middleware: refuse oversized uploads before reading them; report server time."""
from __future__ import annotations

import time

from fastapi import Request
from fastapi.responses import JSONResponse

from core.config import get_settings

# Multipart framing around the images: generous, the per-image checks are exact.
_MULTIPART_OVERHEAD = 64 * 1024


def upload_limit(path: str) -> int | None:
    settings = get_settings()
    if path == "/predict":
        return settings.predict_max_bytes * settings.predict_max_images + _MULTIPART_OVERHEAD
    return None


async def reject_oversized_uploads(request: Request, call_next):
    limit = upload_limit(request.url.path) if request.method == "POST" else None
    length = request.headers.get("content-length")
    if limit is not None and length and length.isdigit() and int(length) > limit:
        return JSONResponse({"detail": f"request body is {length} bytes; the limit for "
                                       f"{request.url.path} is {limit}"}, status_code=413)
    return await call_next(request)


async def server_timing(request: Request, call_next):
    started = time.perf_counter()
    response = await call_next(request)
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    return response
