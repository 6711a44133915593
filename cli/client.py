"""The HTTP session of the client verbs, the `--url` option, and every failure as one
`error:` line.

A client command raises CliError (an API error, an unreachable server, a file that
cannot be read); cli/main.py prints it as `error: <message>` on stderr and exits 1.
Nothing here prints a traceback."""
import json
import os
import re
from urllib.parse import urlsplit
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import httpx
import typer

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "TRAINHUB_URL"
USER_AGENT = "trainhub-cli/0.1"
TIMEOUT = httpx.Timeout(60.0, connect=10.0)

UrlOption = Annotated[str | None, typer.Option(
    "--url", envvar=URL_ENV, show_envvar=True, metavar="URL",
    help=f"the trainhub API (default: ${URL_ENV}, else {DEFAULT_URL})")]
KEY_ENV = "TRAINHUB_API_KEY"
KeyOption = Annotated[str | None, typer.Option(
    "--key", envvar=KEY_ENV, show_envvar=True, metavar="KEY",
    help="API key (default: $TRAINHUB_API_KEY; for a server on this machine, the admin key "
         "in $TRAINHUB_DATA_DIR/admin.key)")]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class CliError(Exception):
    """A failure to show as one line, `error: <str(self)>`, and exit with exit_code."""

    exit_code = 1


class ApiError(CliError):
    """The API answered with an error status."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status} {message}" if message else str(status))
        self.status = status
        self.message = message

    @classmethod
    def from_response(cls, response: httpx.Response) -> "ApiError":
        return cls(response.status_code, describe_error(response))


class Unreachable(CliError):
    """No HTTP answer at all: refused, timed out, a name that does not resolve, a dropped
    connection."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"cannot reach {url}: {reason}")
        self.url = url
        self.reason = reason


def describe_error(response: httpx.Response) -> str:
    """An error body as one line: `field: msg; field: msg` for a 422's list of problems,
    the `detail` sentence otherwise, the status phrase when the body is not the API's."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list) and detail:
        parts = []
        for problem in detail:
            if isinstance(problem, dict):
                field, msg = problem.get("field"), problem.get("msg") or problem.get("type")
                parts.append(f"{field}: {msg}" if field else str(msg))
            else:
                parts.append(str(problem))
        return one_line("; ".join(parts))
    if isinstance(detail, str) and detail:
        return one_line(detail)
    if detail is not None:
        return one_line(json.dumps(detail))
    return response.reason_phrase or ""


def one_line(text: str, limit: int = 2000) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def transport_reason(exc: httpx.TransportError) -> str:
    """`connection refused` rather than `[Errno 111] Connection refused`."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    text = str(exc) or type(exc).__name__
    # httpx/httpcore wrap the OS error: keep its words, drop the errno.
    text = re.sub(r"\[Errno -?\d+\]\s*", "", text)
    text = one_line(text, 300)
    return text[:1].lower() + text[1:] if text else type(exc).__name__


def base_url(url: str | None) -> str:
    url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url  # `localhost:8000` is what people type
    return url


def api_key(url: str, key: str | None) -> str | None:
    """--key, else $TRAINHUB_API_KEY, else for a loopback URL the admin key the local
    server wrote (`trainhub up` / `api` make one when no admin exists)."""
    key = key or os.environ.get(KEY_ENV)
    if key:
        return key.strip()
    if urlsplit(url).hostname not in LOOPBACK_HOSTS:
        return None
    from core.config import get_settings

    try:
        return get_settings().admin_key_file.read_text(encoding="utf-8").strip() or None
    except OSError:  # none written (auth off, or another data dir): ask without a key
        return None


class Api:
    """One HTTP session against the API. Every method raises ApiError for an error status
    and Unreachable when no answer came."""

    def __init__(self, url: str | None = None, key: str | None = None,
                 timeout: httpx.Timeout = TIMEOUT):
        self.url = base_url(url)
        headers = {"User-Agent": USER_AGENT}
        key = api_key(self.url, key)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def __enter__(self) -> "Api":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(self.url, transport_reason(exc)) from None
        if response.is_error:
            raise ApiError.from_response(response)
        return response

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean).json()

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs).json()

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response whose status is already checked (its error body read)."""
        try:
            with self.http.stream(method, path, **kwargs) as response:
                if response.is_error:
                    response.read()
                    raise ApiError.from_response(response)
                yield response
        except httpx.TransportError as exc:
            raise Unreachable(self.url, transport_reason(exc)) from None
