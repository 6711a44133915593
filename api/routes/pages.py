"""The web page: `/` serves the single-page app, `/static/*` its files (no build step).

Every response from here carries a Content-Security-Policy that allows only this origin's
scripts, styles and connections (no inline code), plus `blob:`/`data:` images for the
preview of a dropped image. Media types come from a fixed table rather than the host's
mimetypes database, so a module script is always served as JavaScript.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    # Revalidate each time (ETag / Last-Modified answer 304): an upgrade shows at once.
    "cache-control": "no-cache",
}

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".md": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",  # LICENSE
}

router = APIRouter(tags=["web page"])


def _with_headers(headers: list[tuple[bytes, bytes]], path: str) -> list[tuple[bytes, bytes]]:
    replaced = {name.encode() for name in SECURITY_HEADERS}
    suffix = Path(path).suffix.lower()
    media_type = MEDIA_TYPES.get(suffix)
    if media_type is not None:
        replaced.add(b"content-type")
    kept = [(k, v) for k, v in headers if k.lower() not in replaced]
    kept += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
    if media_type is not None:
        kept.append((b"content-type", media_type.encode()))
    return kept


class PageFiles:
    """StaticFiles (ETag, HEAD, 304, no path escapes, no symlinks followed) with the page's
    headers and media types on every answer."""

    def __init__(self, directory: Path):
        self.files = StaticFiles(directory=directory)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                message["headers"] = _with_headers(list(message.get("headers", [])),
                                                   scope["path"])
            await send(message)

        await self.files(scope, receive, send_with_headers)


@router.get("/", include_in_schema=False, response_class=FileResponse)
def index() -> FileResponse:
    """The single-page app; its views are hash routes (#/jobs/<id>, #/compare, #/new)."""
    return FileResponse(STATIC_DIR / "index.html", headers=SECURITY_HEADERS,
                        media_type=MEDIA_TYPES[".html"])


router.mount("/static", PageFiles(STATIC_DIR), name="static")
