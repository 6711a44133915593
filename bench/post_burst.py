"""POST /jobs from many clients at once, and the check that each was taken exactly once
(bench/api_reads_bench.py's bursts)."""
from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections import Counter

TENANT = "bench-tenant"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Burst:
    """Exactly once, checked after each burst against the bench's database and its broker
    queue (one seeded job before the bursts: its row and its message)."""

    def __init__(self, db_url: str, broker: str, queue: str):
        self.db_url = db_url.replace("postgresql+psycopg://", "postgresql://")
        self.broker, self.queue = broker, queue
        self.bursts, self.jobs = 0, 0

    def queued(self) -> Counter:
        """How many messages of the queue (all its priority lists) name each job id."""
        import redis

        client, ids = redis.Redis.from_url(self.broker), Counter()
        for name in client.scan_iter(match=f"{self.queue}*"):
            if client.type(name) != b"list":
                continue
            for message in client.lrange(name, 0, -1):
                message = json.loads(message)
                body = message["body"]
                if message.get("properties", {}).get("body_encoding") == "base64":
                    body = base64.b64decode(body)
                if message["headers"].get("task") != "trainhub.run_job":
                    raise RuntimeError(f"an unexpected message in {self.queue}: {message}")
                ids[json.loads(body)[0][0]] += 1
        return ids

    def check(self, tag: str, who: str, answers: list[tuple[int, bytes]],
              before: Counter) -> None:
        import psycopg

        n, problems = len(answers), []
        names = {f"bench-{tag}-{i}" for i in range(n)}
        bodies = [json.loads(body) if code == 201 else None for code, body in answers]
        refused = [(code, body[:300]) for code, body in answers if code != 201]
        if refused:
            problems.append(f"{len(refused)} answers not 201, e.g. {refused[:3]}")
        ids = [b["id"] for b in bodies if b]
        if len(set(ids)) != len(ids):
            problems.append(f"{len(ids) - len(set(ids))} job ids answered more than once")
        if {b["name"] for b in bodies if b} - names:
            problems.append("answers name jobs that were not asked for")
        with psycopg.connect(self.db_url) as conn:
            rows = conn.execute(
                "SELECT j.id, j.name, j.status, j.enqueued_at IS NOT NULL, u.name FROM jobs j "
                "LEFT JOIN users u ON u.id = j.owner WHERE j.name LIKE %s",
                (f"bench-{tag}-%",)).fetchall()
            total = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
        owner = "admin" if who == "admin" else TENANT
        if sorted(r[1] for r in rows) != sorted(names):
            problems.append(f"{len(rows)} jobs named bench-{tag}-* in the database, "
                            f"{len({r[1] for r in rows})} distinct names, for {n} requests")
        if {r[0] for r in rows} != set(ids):
            problems.append("the database's job ids are not the answered ones")
        bad = [r for r in rows if r[2] != "queued" or not r[3] or r[4] != owner]
        if bad:
            problems.append(f"{len(bad)} jobs not queued, not marked enqueued, or not owned "
                            f"by {owner}, e.g. {bad[:3]}")
        if total != 1 + self.jobs + n:  # the seeded job, the bursts before, this one
            problems.append(f"{total} jobs in the database, expected {1 + self.jobs + n}")
        added = self.queued()
        added.subtract(before)
        added = +added  # nothing may go either: no consumer
        if added != Counter(ids) or sum(before.values()) != 1 + self.jobs:
            problems.append(f"the queue gained {sum(added.values())} messages for "
                            f"{len(added)} jobs, expected one for each of {len(ids)}")
        if problems:
            raise RuntimeError(f"POST /jobs burst {tag} was not exactly once: "
                               + "; ".join(problems))
        self.bursts, self.jobs = self.bursts + 1, self.jobs + n


async def post_at_once(base: str, auth: dict, n: int, tag: str) -> dict:
    """n POST /jobs sent at the same moment, each on its own connection opened beforehand.

    The client is raw asyncio streams with the requests' bytes built in advance: httpx's
    AsyncClient spent more CPU than the API on 2 cores (4.6 s for 200 posts), so it measured
    itself, and connections it reached after uvicorn's 5 s keep-alive were closed under it."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    headers = "".join(f"{k}: {v}\r\n" for k, v in auth.items())

    def request(i: int) -> bytes:
        body = json.dumps({"model": "lenet", "dataset": "digits",
                           "name": f"bench-{tag}-{i}"}).encode()
        return (f"POST /jobs HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body

    connections = await asyncio.gather(*(asyncio.open_connection(host, int(port))
                                         for _ in range(n)))
    gate = asyncio.Event()

    async def one(i: int, reader, writer) -> tuple[float, int, bytes]:
        payload = request(i)
        await gate.wait()
        started = time.perf_counter()
        writer.write(payload)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        body = await reader.readexactly(int(length.group(1)) if length else 0)
        elapsed = (time.perf_counter() - started) * 1000
        writer.close()
        return elapsed, status, body

    tasks = [asyncio.create_task(one(i, r, w)) for i, (r, w) in enumerate(connections)]
    await asyncio.sleep(0.05)
    gate.set()
    answers = await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    latencies = [ms for ms, _, _ in answers]
    statuses = dict(Counter(str(code) for _, code, _ in answers))
    return {"p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
            "max_ms": max(latencies), "statuses": statuses,
            "answers": [(code, body) for _, code, body in answers]}
