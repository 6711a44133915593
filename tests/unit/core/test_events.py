"""core.events' entry format: the worker's batched `metrics` entries and their decoding back
into one `metric` event per point; publishing to the test session's Redis."""
from __future__ import annotations

import uuid

import orjson

from core import events
from core.config import get_settings


def point(i: int) -> dict:
    return {"id": 100 + i, "name": "loss", "epoch": 1, "batch": i, "step": i,
            "value": 1.0 / (i + 1)}


def test_points_are_split_into_entries_of_at_most_metrics_per_entry():
    points = [point(i) for i in range(2 * events.METRICS_PER_ENTRY + 1)]
    entries = events.metrics_entries(points, prev=99)
    assert [len(e["points"]) for e in entries] == [events.METRICS_PER_ENTRY,
                                                   events.METRICS_PER_ENTRY, 1]
    assert all(e["type"] == "metrics" and e["prev"] == 99 for e in entries)
    assert events.metrics_entries([], prev=99) == []


def test_a_metrics_entry_decodes_to_one_metric_event_per_point_in_order():
    [entry] = events.metrics_entries([point(1), point(2)], prev=7)
    decoded = events.decode(orjson.dumps(entry))
    assert decoded == [{"type": "metric", **point(1), "prev": 7},
                       {"type": "metric", **point(2), "prev": 7}]


def test_other_entries_decode_to_themselves():
    status = {"type": "status", "status": "running", "attempt": 1}
    assert events.decode(orjson.dumps(status)) == [status]
    assert events.decode('{"type": "progress", "step": 3}') == [{"type": "progress",
                                                                 "step": 3}]


def test_publish_writes_each_entry_as_json_with_null_for_a_missing_value():
    client = events.connect(get_settings().redis_url)  # the test session's Redis
    job_id = f"events-test-{uuid.uuid4().hex}"
    try:
        entries = events.metrics_entries([{**point(1), "value": None}], prev=None)
        events.publish(client, job_id, [*entries, {"type": "progress", "step": 1, 2: "two"}],
                       expire_seconds=60)
        [(_, first), (_, second)] = client.xrange(events.stream_key(job_id))
        assert events.decode(first[b"data"]) == [{"type": "metric", **point(1),
                                                  "value": None, "prev": None}]
        assert orjson.loads(second[b"data"]) == {"type": "progress", "step": 1, "2": "two"}
        assert events.stored_events(client, job_id) == [
            *events.decode(first[b"data"]), orjson.loads(second[b"data"])]
        assert 0 < client.ttl(events.stream_key(job_id)) <= 60
    finally:
        client.delete(events.stream_key(job_id))
