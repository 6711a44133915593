"""Server-Sent Events: the text/event-stream parser, and a reader of a job's stream that
resumes with `Last-Event-ID` after a drop.

The parser follows the WHATWG rules; the reader reconnects when the connection drops
before the `end` event, sending the last id as `Last-Event-ID`."""
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from cli.client import Api, ApiError, CliError, Unreachable, transport_reason

# The server sends a `: ping` comment well within this; silence this long is a dead link.
READ_TIMEOUT_S = 60.0
# After a drop: retry this long without receiving a single event, then give up.
GIVE_UP_AFTER_S = 120.0
FIRST_RETRY_S, MAX_RETRY_S = 0.5, 10.0


@dataclass(frozen=True)
class Event:
    data: str
    event: str = "message"
    id: str | None = None  # the last event id in force when it was dispatched


class Heartbeat:
    """A comment line (`: ping`): the link is alive, nothing happened."""


HEARTBEAT = Heartbeat()


class Parser:
    """Feed it lines (their terminator removed); it returns an Event at each blank line that
    ends one, HEARTBEAT for a comment, else None."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.retry_ms: int | None = None
        self._data: list[str] = []
        self._type = ""
        self._first = True

    def feed(self, line: str) -> Event | Heartbeat | None:
        if self._first:
            self._first = False
            line = line.removeprefix("\ufeff")
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return HEARTBEAT
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._type = value
        elif field == "id":
            if "\0" not in value:
                self.last_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None  # unknown fields are ignored

    def _dispatch(self) -> Event | None:
        data, kind = self._data, self._type
        self._data, self._type = [], ""
        if not data:
            return None
        return Event(data="\n".join(data), event=kind or "message", id=self.last_id)


def parse(lines: Iterable[str]) -> Iterator[Event | Heartbeat]:
    parser = Parser()
    for line in lines:
        item = parser.feed(line)
        if item is not None:
            yield item


class Dropped(Exception):
    """The stream ended or broke before the `end` event."""


def job_events(api: Api, job_id: str, on_heartbeat: Callable[[], None] = lambda: None,
               sleep: Callable[[float], None] = time.sleep) -> Iterator[dict[str, Any]]:
    """Every event's `data` object of the job's stream, in order, up to and including the
    `end` event; a dropped connection is resumed with Last-Event-ID (no repeat, no gap).

    The first connection failing is an error at once (Unreachable, ApiError); later ones
    are retried with backoff until GIVE_UP_AFTER_S pass without an event."""
    path = f"/jobs/{quote(job_id, safe='')}/events"
    last_id: str | None = None
    # Belt and braces: a point (unique by name and step) that comes twice is yielded once.
    # Ids are not compared: after a resume the server numbers non-point events afresh.
    seen: set[tuple[Any, Any]] = set()
    base_retry_s = retry_s = FIRST_RETRY_S
    connected = False
    quiet_since: float | None = None
    reason = ""
    while True:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_id:  # an empty id means none (the WHATWG rule)
            headers["Last-Event-ID"] = last_id
        try:
            with api.http.stream("GET", path, headers=headers,
                                 timeout=httpx.Timeout(READ_TIMEOUT_S, connect=10.0)) as resp:
                if resp.is_error:
                    resp.read()
                    error = ApiError.from_response(resp)
                    if not connected or resp.status_code < 500:
                        raise error
                    raise Dropped(str(error))
                content_type = resp.headers.get("content-type", "")
                if not content_type.startswith("text/event-stream"):
                    raise CliError(f"{api.url}{path} answered {content_type or 'no content type'}"
                                   ", not an event stream")
                connected = True
                parser = Parser()
                for line in resp.iter_lines():
                    item = parser.feed(line)
                    if item is None:
                        continue
                    if isinstance(item, Heartbeat):
                        on_heartbeat()
                        continue
                    if parser.retry_ms is not None:  # the server's own `retry:` advice
                        base_retry_s = max(0.1, parser.retry_ms / 1000)
                    if item.id is not None:
                        last_id = item.id
                    quiet_since, retry_s = None, base_retry_s
                    try:
                        data = json.loads(item.data)
                    except ValueError:
                        continue  # not ours to understand; the next event may be
                    if not isinstance(data, dict):
                        continue
                    if data.get("type") == "metric":
                        key = (data.get("name"), data.get("step"))
                        if key in seen:
                            continue
                        seen.add(key)
                    yield data
                    if data.get("type") == "end":
                        return
                raise Dropped("the stream ended before its `end` event")
        except httpx.TransportError as exc:
            if not connected:
                raise Unreachable(api.url, transport_reason(exc)) from None
            reason = f"connection lost: {transport_reason(exc)}"
        except Dropped as exc:
            reason = str(exc)
        now = time.monotonic()
        quiet_since = quiet_since if quiet_since is not None else now
        if now - quiet_since > GIVE_UP_AFTER_S:
            raise CliError(f"gave up following job {job_id} after {GIVE_UP_AFTER_S:g}s "
                           f"without an event from {api.url} ({reason})")
        sleep(retry_s)
        retry_s = min(retry_s * 2, MAX_RETRY_S)
