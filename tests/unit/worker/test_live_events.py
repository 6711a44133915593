"""worker.live_events without a Redis: the events of the points a write stored (row ids,
null for a diverged value, each stored point once), and the backoff after a failed publish."""
from __future__ import annotations

import math

from worker.live_events import EventPublisher, stored_point_events
from worker.reporting import Metric


class Pipeline:
    def __init__(self, client):
        self.client = client

    def xadd(self, key, fields, **_options):
        self.client.added.append(fields)

    def execute(self):
        self.client.calls += 1
        if self.client.down:
            raise ConnectionError("Redis is down")


class FakeRedis:
    def __init__(self):
        self.down, self.calls, self.added = False, 0, []

    def pipeline(self, transaction=True):
        return Pipeline(self)


def test_only_the_points_stored_now_go_out_once_each_in_the_order_handed_over():
    points = [Metric("loss", 1, 1, 1, 2.0), Metric("loss", 1, 2, 2, math.nan),
              Metric("loss", 1, 1, 1, 9.0), Metric("lr", 1, 2, 2, 0.1)]
    ids = {("loss", 1): 11, ("loss", 2): 12}  # lr at step 2 was stored before: a replay
    assert stored_point_events(points, ids) == [
        {"id": 11, "name": "loss", "epoch": 1, "batch": 1, "step": 1, "value": 2.0},
        {"id": 12, "name": "loss", "epoch": 1, "batch": 2, "step": 2, "value": None}]
    assert stored_point_events(points, {}) == []


def test_after_a_failed_publish_the_next_waits_for_the_backoff():
    client = FakeRedis()
    publisher = EventPublisher(client, "job-1")
    event = [{"type": "progress", "epoch": 1, "step": 1, "total_steps": 2}]
    client.down = True
    publisher.publish(event)
    assert client.calls == 1 and publisher.down_since is not None and not publisher.due()
    publisher.publish(event)  # within the backoff: not tried
    assert client.calls == 1
    client.down = False
    publisher.retry_at = 0.0  # the backoff has passed
    assert publisher.due()
    publisher.publish(event)
    assert client.calls == 2 and publisher.down_since is None and publisher.due()


def test_no_client_publishes_nothing():
    publisher = EventPublisher(None, "job-1")
    assert not publisher.due()
    publisher.publish([{"type": "progress"}])  # a no-op, no error
