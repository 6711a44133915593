"""Event ids of GET /jobs/{id}/events (api/live.py): what a Last-Event-ID stands for, and
how numbering continues after it."""
from __future__ import annotations

import pytest

from api.live import EventStream, parse_last_event_id


@pytest.mark.parametrize("value, expected", [
    (None, (0, 0)), ("", (0, 0)), ("42", (42, 0)), ("42.000003", (42, 3)),
    (" 42.000003 ", (42, 3)), ("abc", (0, 0)), ("-5", (0, 0)), ("1" * 40, (0, 0)),
    ("7.x", (7, 0)), ("7.1234567", (7, 0)),
])
def test_last_event_id_parsing(value, expected):
    assert parse_last_event_id(value) == expected


def test_ids_strictly_increase_and_continue_after_the_clients_last_one():
    stream = EventStream("0" * 32, "42.000003")
    ids = []
    for payload, point in [({"type": "status"}, None), ({"type": "metric"}, 57),
                           ({"type": "progress"}, None), ({"type": "progress"}, None),
                           ({"type": "metric"}, 58)]:
        frame = stream._frame(payload, point)
        ids.append(frame.split("\n", 1)[0].removeprefix("id: "))
    assert ids == ["42.000004", "57", "57.000001", "57.000002", "58"]
    assert [float(i) for i in ids] == sorted(float(i) for i in ids)
