"""`trainhub follow`: the SSE parser, reconnection with Last-Event-ID against a stand-in
server that drops the stream, and the real GET /jobs/{id}/events replaying a finished job."""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cli import sse
from cli.follow import Display, SampleRate, epoch_line, loss_line
from tests.integration.cli.conftest import (assert_one_error_line, finish_job, invoke,
                                            tutorial_points)

JOB_ID = "a" * 32


# ---- the parser -----------------------------------------------------------------------------

def events_of(text: str) -> list:
    return list(sse.parse(text.split("\n")))


def test_parser_joins_data_lines_keeps_the_last_id_and_skips_comments():
    items = events_of("\ufeff: hello\nid: 7\ndata: {\"a\":\ndata:  1}\n\n"
                      "event: x\ndata: two\n\nid\ndata: three\n\nretry: 2500\n\n")
    assert items[0] is sse.HEARTBEAT
    assert items[1] == sse.Event(data='{"a":\n 1}', event="message", id="7")
    assert items[2] == sse.Event(data="two", event="x", id="7")  # the id stays in force
    assert items[3] == sse.Event(data="three", id="")  # a bare `id` resets it
    assert len(items) == 4  # retry alone dispatches nothing


def test_parser_ignores_unknown_fields_ids_with_nul_and_a_trailing_partial_event():
    parser = sse.Parser()
    for line in ["id: 1", "foo: bar", "data: x", "", "id: 2\0", "data: y", "", "data: z"]:
        parser.feed(line)
    assert parser.last_id == "1"
    assert events_of("data: no blank line at the end") == []


def test_loss_and_epoch_lines():
    assert loss_line(1, 2000, 2.18712) == "[1,  2000] loss: 2.187"
    assert loss_line(12, 20, None) == "[12,    20] loss: nan"
    assert epoch_line(1, {"train_loss": 0.5, "eval_loss": 0.25, "eval_accuracy": 0.93612,
                          "samples_per_second": 1234.56}) == (
        "epoch 1: eval_accuracy=0.9361 eval_loss=0.2500 train_loss=0.5000 "
        "samples_per_second=1234.6")


# ---- samples per second -------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def shown_rate(display: Display) -> str:
    """What the bar of the epoch under way shows in its samples/s column."""
    column = next(c for c in display.bars.columns if isinstance(c, SampleRate))
    return column.render(display.bars.tasks[-1]).plain


def rate_display(epochs: int, steps_per_epoch: int, batch_size: int) -> tuple[Display, Clock]:
    clock = Clock()
    job = {"id": JOB_ID, "name": "rate", "status": "running",
           "spec": {"hyperparameters": {"epochs": epochs, "batch_size": batch_size}},
           "progress": {"epoch": 1, "step": 0, "total_steps": epochs * steps_per_epoch}}
    return Display(job, live=True, clock=clock), clock


def progress(step: int, spe: int, total: int) -> dict:
    return {"type": "progress", "epoch": (step - 1) // spe + 1, "step": step,
            "total_steps": total}


def test_a_fast_job_shows_the_rate_it_reported_not_one_of_its_batched_events():
    # The report of #20: the README's default job (lenet on digits, batch 4: 360 steps an
    # epoch) trains 9,453 samples/s, an epoch in 0.15 s; the worker publishes every 0.5 s,
    # so whole epochs of events arrive microseconds apart. The bar said 332,306.
    display, clock = rate_display(epochs=2, steps_per_epoch=360, batch_size=4)
    try:
        display.handle({"type": "status", "status": "running"})
        clock.now += 0.5
        for event in (metric("loss", 1, 360, 360, 2.1), metric("train_loss", 1, 360, 360, 2.1),
                      metric("samples_per_second", 1, 360, 360, 9453.2),
                      metric("eval_accuracy", 1, 360, 360, 0.6), progress(500, 360, 720)):
            display.handle(event)
            clock.now += 0.00002
        assert shown_rate(display) == "9,453 samples/s"
        clock.now += 0.5
        for event in (metric("loss", 2, 360, 720, 1.2),
                      metric("samples_per_second", 2, 360, 720, 9601.0), progress(720, 360, 720)):
            display.handle(event)
            clock.now += 0.00002
        assert shown_rate(display) == "9,601 samples/s"
    finally:
        display.close()


def test_a_long_epoch_shows_the_rate_of_the_last_seconds_of_events():
    # 200 steps/s at batch 16 (3,200 samples/s), published every 0.5 s: a progress event and,
    # every 20 steps, a loss point; following starts with a replay of the first 2,000 steps.
    display, clock = rate_display(epochs=2, steps_per_epoch=3000, batch_size=16)
    try:
        for step in range(20, 2001, 20):  # the replay: one batch
            display.handle(metric("loss", 1, step, step, 1.0))
            display.handle(progress(step, 3000, 6000))
            clock.now += 0.00001
        assert shown_rate(display) == "- samples/s"  # nothing measured, nothing reported
        step, replayed = 2000, clock.now
        for flush in range(1, 13):
            for i in range(5):
                clock.now = replayed + 0.5 * flush + 0.0001 * i
                step += 20
                display.handle(metric("loss", (step - 1) // 3000 + 1, (step - 1) % 3000 + 1,
                                      step, 1.0))
            display.handle(progress(step, 3000, 6000))
            if flush < 4:
                assert shown_rate(display) == "- samples/s", flush  # under 2 s of events
        assert shown_rate(display) == "3,200 samples/s"
    finally:
        display.close()


# ---- a stand-in server --------------------------------------------------------------------

def frame(event_id: str, data: dict) -> bytes:
    return f"id: {event_id}\ndata: {json.dumps(data)}\n\n".encode()


def job(status: str = "running", error: str | None = None) -> dict:
    return {"id": JOB_ID, "name": "standin", "status": status, "model": "mlp",
            "dataset": "digits", "spec": {"hyperparameters": {"epochs": 2, "batch_size": 16}},
            "progress": {"epoch": 1, "step": 0, "total_steps": 180}, "worker": "w@test",
            "device": "cpu", "attempts": 1, "metrics": {"eval_accuracy": 0.9}, "error": error}


def metric(name: str, epoch: int, batch: int, step: int, value: float | None) -> dict:
    return {"type": "metric", "name": name, "epoch": epoch, "batch": batch, "step": step,
            "value": value, "time": "2026-01-01T00:00:00Z"}


class StandIn:
    """Serves GET /jobs/{id} and, per connection to /events, the next script of frames;
    a script without an `end` frame ends the connection early (a dropped stream)."""

    def __init__(self, scripts: list[list[bytes]], content_type: str = "text/event-stream"):
        self.scripts, self.content_type = list(scripts), content_type
        self.last_event_ids: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the connection's end is the body's end

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == f"/jobs/{JOB_ID}":
                    body = json.dumps(job("queued")).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                outer.last_event_ids.append(self.headers.get("Last-Event-ID"))
                script = outer.scripts.pop(0) if outer.scripts else []
                self.send_response(200)
                self.send_header("Content-Type", outer.content_type)
                self.end_headers()
                for chunk in script:
                    self.wfile.write(chunk)
                    self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def standin():
    servers = []

    def start(*scripts, **kwargs) -> StandIn:
        server = StandIn(list(scripts), **kwargs)
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.close()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(sse, "FIRST_RETRY_S", 0.05)


def test_a_dropped_stream_resumes_with_last_event_id_without_repeats_or_gaps(standin):
    first = [frame("10.000001", {"type": "status", "status": "running", "job": job()}),
             frame("11", metric("loss", 1, 20, 20, 2.25)),
             b": ping\n\n",
             frame("12", metric("loss", 1, 40, 40, 2.0)),
             b"id: 13\ndata: {\"type\": \"metric\", \"na"]  # cut mid-event
    second = [frame("12.000001", {"type": "status", "status": "running", "job": job()}),
              frame("12", metric("loss", 1, 40, 40, 2.0)),  # a repeat: shown once
              frame("13", metric("loss", 1, 60, 60, 1.5)),
              frame("14", metric("eval_accuracy", 1, 90, 90, 0.9)),
              frame("15", metric("eval_loss", 1, 90, 90, 0.3)),
              frame("15.000001", {"type": "progress", "epoch": 1, "step": 90,
                                  "total_steps": 180}),
              frame("16", metric("loss", 2, 20, 110, None)),
              frame("16.000001", {"type": "end", "status": "succeeded",
                                  "job": job("succeeded")})]
    server = standin(first, second)
    run = invoke("follow", JOB_ID, "--url", server.url)
    assert run.exit_code == 0, run.stderr
    assert server.last_event_ids == [None, "12"]
    assert run.lines == [
        f"following job {JOB_ID} (standin): mlp on digits",
        "status: running on w@test (cpu)",
        "[1,    20] loss: 2.250",
        "[1,    40] loss: 2.000",
        "[1,    60] loss: 1.500",
        "epoch 1: eval_accuracy=0.9000 eval_loss=0.3000",
        "[2,    20] loss: nan",
        run.lines[-1],
    ]
    assert re.fullmatch(rf"job {JOB_ID} succeeded \(\d+\.\ds followed\): "
                        r"eval_accuracy=0\.9000", run.lines[-1])


@pytest.mark.parametrize("status,error,expected", [
    ("failed", "CUDA out of memory", f"error: job {JOB_ID} failed: CUDA out of memory"),
    ("cancelled", None, f"error: job {JOB_ID} was cancelled"),
])
def test_a_job_that_did_not_succeed_exits_1_with_its_error(standin, status, error, expected):
    server = standin([frame("1.000001", {"type": "status", "status": "running"}),
                      frame("1.000002", {"type": "end", "status": status,
                                         "job": job(status, error)})])
    run = invoke("follow", JOB_ID, "--url", server.url)
    assert_one_error_line(run, expected)


def test_following_gives_up_when_no_event_comes_back(standin, monkeypatch):
    monkeypatch.setattr(sse, "GIVE_UP_AFTER_S", 0.5)
    server = standin(*[[b": ping\n\n"]] * 100)
    line = assert_one_error_line(invoke("follow", JOB_ID, "--url", server.url))
    assert line.startswith(f"error: gave up following job {JOB_ID} after 0.5s without an event")
    assert len(server.last_event_ids) > 2


def test_an_answer_that_is_not_an_event_stream_is_one_line(standin):
    server = standin([b"<html>"], content_type="text/html")
    line = assert_one_error_line(invoke("follow", JOB_ID, "--url", server.url))
    assert line.endswith("answered text/html, not an event stream")


# ---- the real API -------------------------------------------------------------------------

def submit(cli) -> str:
    run = cli("submit", "--model", "mlp", "--dataset", "digits", "--batch-size", "16",
              "--log-every", "20")
    assert run.exit_code == 0, run.stderr
    return run.lines[-1]


def test_following_a_finished_job_replays_the_tutorial_lines(cli):
    job_id = submit(cli)
    points = tutorial_points()
    finish_job(job_id, points)
    run = cli("follow", job_id)
    assert run.exit_code == 0, run.stderr
    losses = [line for line in run.lines if line.startswith("[")]
    assert losses == [loss_line(p["epoch"], p["batch"], p["value"]) for p in points
                      if p["name"] == "loss"]
    assert losses[0] == "[1,    20] loss: 0.227"
    evals = [line for line in run.lines if line.startswith("epoch ")]
    assert evals == ["epoch 1: eval_accuracy=0.8100 eval_loss=0.9000 train_loss=1.0000",
                     "epoch 2: eval_accuracy=0.8200 eval_loss=0.4500 train_loss=0.5000"]
    assert run.lines[-1].startswith(f"job {job_id} succeeded")


def test_following_a_cancelled_job_exits_1(cli):
    job_id = submit(cli)
    assert cli("cancel", job_id).exit_code == 0
    run = cli("follow", job_id)
    assert_one_error_line(run, f"error: job {job_id} was cancelled")
    assert "status: cancelled" in run.stdout


def test_following_an_unknown_job_is_a_404_line(cli):
    assert_one_error_line(cli("follow", "0" * 32), f"error: 404 job '{'0' * 32}' not found")


def test_on_a_terminal_the_bars_go_with_the_same_lines(standin, monkeypatch):
    from cli import output

    monkeypatch.setattr(output, "interactive", lambda: True)
    monkeypatch.setenv("COLUMNS", "120")
    events = [frame("1.000001", {"type": "status", "status": "running", "job": job()})]
    for step in range(1, 181):
        epoch, batch = (step - 1) // 90 + 1, (step - 1) % 90 + 1
        if batch % 20 == 0:
            events.append(frame(str(step), metric("loss", epoch, batch, step, 1.0 / step)))
        events.append(frame(f"{step}.000001", {"type": "progress", "epoch": epoch,
                                               "step": step, "total_steps": 180}))
        if batch == 90:
            events.append(frame(f"{step}.000002", metric("eval_accuracy", epoch, 90, step,
                                                         0.5 + epoch / 10)))
    events.append(frame("999", {"type": "end", "status": "succeeded", "job": job("succeeded")}))
    server = standin(events)
    run = invoke("follow", JOB_ID, "--url", server.url)
    assert run.exit_code == 0, run.stderr
    for line in ("[1,    20] loss: 0.050", "[2,    80] loss: 0.006",
                 "epoch 1: eval_accuracy=0.6000", "epoch 2: eval_accuracy=0.7000"):
        assert line in run.stdout
    assert "epoch 1/2" in run.stdout and "epoch 2/2" in run.stdout and "90/90" in run.stdout
