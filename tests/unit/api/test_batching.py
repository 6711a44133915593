"""/predict's micro-batcher (api/predictor.py Batcher): concurrent requests for one model
share forward passes, each gets its own rows, errors stay with their pass, the window and
the max batch hold, and a lone request never waits. Counts and order, not wall-clock."""
from __future__ import annotations

import asyncio

import pytest
import torch

from api.predictor import Arrivals, Batcher, Predictor
from tests.unit.api.test_predictor import loaded_model, random_images
from tests.unit.factories import one_torch_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


class GatedRunner:
    """Runs the forward pass inline (no thread), each pass held until released: requests
    submitted meanwhile queue up, as they do while a real pass runs in its thread."""

    def __init__(self, hold: bool = True, fail_on: set[int] = frozenset()):
        self.hold, self.fail_on = hold, fail_on
        self.gate: asyncio.Event | None = None
        self.sizes: list[int] = []  # images per pass
        self.started = 0

    async def __call__(self, fn, loaded, batch):
        self.started += 1
        if self.hold:
            if self.gate is None:
                self.gate = asyncio.Event()
            await self.gate.wait()
        self.sizes.append(len(batch))
        if len(self.sizes) in self.fail_on:
            raise RuntimeError("forward pass failed")
        return fn(loaded, batch)

    def release(self) -> None:
        self.hold = False
        if self.gate is not None:
            self.gate.set()


def make(n: int, seed: int, window_s: float = 0, max_images: int = 64, hold: bool = True,
         shape=(1, 8, 8), fail_on=frozenset()):
    """A model, n images, the arrivals, a gated runner and the batcher under test."""
    loaded = loaded_model(shape)
    arrivals, runner = Arrivals(), GatedRunner(hold, fail_on)
    batcher = Batcher(loaded, window_s=window_s, max_images=max_images, arrivals=arrivals,
                      run_sync=runner)
    return loaded, random_images(n, seed=seed), arrivals, runner, batcher


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def assert_same(batched: list[list[dict]], alone: list[list[dict]]) -> None:
    assert len(batched) == len(alone)
    for b, a in zip(batched, alone):
        assert [p["index"] for p in b] == [p["index"] for p in a]
        assert [p["label"] for p in b] == [p["label"] for p in a]
        assert [p["probability"] for p in b] == pytest.approx(
            [p["probability"] for p in a], abs=1e-5)


def test_concurrent_requests_share_passes_and_each_gets_its_own_result():
    loaded = loaded_model()
    images = random_images(8, seed=3)
    top_ks = [1, 2, 3, 4, 5, 1, 3, 5]
    runner = GatedRunner()
    batcher = Batcher(loaded, window_s=0, max_images=64, run_sync=runner)

    async def main():
        first = asyncio.ensure_future(
            batcher.submit(Predictor.tensors(loaded, images[:1]), top_ks[0]))
        await settle()  # the first pass is running (held)
        rest = [asyncio.ensure_future(batcher.submit(Predictor.tensors(loaded, [im]), k))
                for im, k in zip(images[1:], top_ks[1:])]
        await settle()
        assert runner.started == 1  # the others wait for the running pass
        runner.release()
        return [await first, *[await r for r in rest]]

    results = asyncio.run(main())
    assert batcher.passes == 2 < len(images)
    assert batcher.batch_sizes == [1, 7] and runner.sizes == [1, 7]
    assert batcher.requests == 8 and batcher.images == 8
    for image, k, result in zip(images, top_ks, results):
        assert len(result) == 1 and len(result[0]) == k
        assert_same(result, Predictor.predict(loaded, [image], k))


def test_multi_image_requests_get_their_own_rows_in_order():
    loaded = loaded_model((3, 16, 16))
    images = random_images(9, seed=4)
    groups = [images[0:1], images[1:4], images[4:9]]
    runner = GatedRunner()
    batcher = Batcher(loaded, window_s=0, max_images=64, run_sync=runner)

    async def main():
        first = asyncio.ensure_future(batcher.submit(Predictor.tensors(loaded, groups[0]), 3))
        await settle()
        rest = [asyncio.ensure_future(batcher.submit(Predictor.tensors(loaded, g), 2))
                for g in groups[1:]]
        await settle()
        runner.release()
        return [await first, *[await r for r in rest]]

    results = asyncio.run(main())
    assert runner.sizes == [1, 8]
    for group, k, result in zip(groups, (3, 2, 2), results):
        assert_same(result, Predictor.predict(loaded, group, k))


def test_max_batch_splits_the_queue_and_a_large_request_runs_alone():
    loaded, images, arrivals, runner, batcher = make(12, 5, max_images=4)

    async def main():
        first = asyncio.ensure_future(batcher.submit(Predictor.tensors(loaded, images[:1]), 1))
        await settle()
        singles = [asyncio.ensure_future(batcher.submit(Predictor.tensors(loaded, [im]), 1))
                   for im in images[1:6]]
        big = asyncio.ensure_future(batcher.submit(Predictor.tensors(loaded, images[6:12]), 1))
        last = asyncio.ensure_future(batcher.submit(Predictor.tensors(loaded, images[:1]), 1))
        await settle()
        runner.release()
        return await first, [await s for s in singles], await big, await last

    first, singles, big, last = asyncio.run(main())
    # 1 alone, then 4 singles, then 1 single (the big one would pass 4), the big one alone
    # (6 > 4: a request is never split), then the last.
    assert runner.sizes == [1, 4, 1, 6, 1]
    assert batcher.batch_sizes == [1, 4, 1, 1, 1]
    assert all(size <= 4 for size in runner.sizes if size != 6)
    assert len(big) == 6
    assert_same(big, Predictor.predict(loaded, images[6:12], 1))


def test_a_failing_pass_fails_only_its_own_requests():
    loaded, images, arrivals, runner, batcher = make(5, 6, fail_on={2})

    async def main():
        first = asyncio.ensure_future(batcher.submit(Predictor.tensors(loaded, images[:1]), 2))
        await settle()
        doomed = [asyncio.ensure_future(batcher.submit(Predictor.tensors(loaded, [im]), 2))
                  for im in images[1:3]]
        await settle()
        runner.release()
        outcomes = await asyncio.gather(first, *doomed, return_exceptions=True)
        after = await batcher.submit(Predictor.tensors(loaded, images[3:5]), 2)
        return outcomes, after

    (first, *doomed), after = asyncio.run(main())
    assert_same(first, Predictor.predict(loaded, images[:1], 2))
    assert all(isinstance(d, RuntimeError) for d in doomed)
    assert_same(after, Predictor.predict(loaded, images[3:5], 2))  # the batcher goes on
    assert batcher.passes == 3


def test_a_lone_request_does_not_wait_for_the_window():
    loaded, image, arrivals, runner, batcher = make(1, 7, window_s=3600, hold=False)

    async def main():
        # A guard only: with an hour's window, waiting would time out here.
        return await asyncio.wait_for(batcher.submit(Predictor.tensors(loaded, image), 3), 60)

    result = asyncio.run(main())
    assert batcher.waits == 0 and batcher.passes == 1
    assert_same(result, Predictor.predict(loaded, image, 3))


def test_the_window_waits_for_requests_on_their_way_then_closes_when_none_are_left():
    loaded, images, arrivals, runner, batcher = make(3, 8, window_s=3600, hold=False)

    async def main():
        for _ in range(3):
            arrivals.enter()  # three requests start (parsing, decoding...)
        arrivals.leave()
        first = asyncio.ensure_future(batcher.submit(Predictor.tensors(loaded, images[:1]), 1))
        await settle()
        assert runner.started == 0 and batcher.waits == 1  # two more are on their way
        arrivals.leave()
        second = asyncio.ensure_future(batcher.submit(Predictor.tensors(loaded, images[1:2]), 1))
        await settle()
        assert runner.started == 0  # one more is on its way
        arrivals.leave()  # the last one fails before it submits: nobody left to wait for
        return await asyncio.wait_for(asyncio.gather(first, second), 60)

    results = asyncio.run(main())
    assert runner.sizes == [2] and batcher.passes == 1 and batcher.waits == 1
    for image, result in zip(images, results):
        assert_same(result, Predictor.predict(loaded, [image], 1))


def test_the_window_ends_a_wait_for_a_request_that_never_comes():
    loaded, image, arrivals, runner, batcher = make(1, 9, window_s=0.001, hold=False)

    async def main():
        arrivals.enter()  # somebody else is on the way and stays so
        return await asyncio.wait_for(batcher.submit(Predictor.tensors(loaded, image), 1), 60)

    result = asyncio.run(main())
    assert batcher.waits == 1 and runner.sizes == [1]
    assert_same(result, Predictor.predict(loaded, image, 1))


def test_the_window_closes_early_when_the_batch_is_full():
    loaded, images, arrivals, runner, batcher = make(4, 10, window_s=3600, max_images=2,
                                                     hold=False)

    async def main():
        for _ in range(4):
            arrivals.enter()
        futures = []
        for image in images[:2]:
            arrivals.leave()
            futures.append(asyncio.ensure_future(
                batcher.submit(Predictor.tensors(loaded, [image]), 1)))
            await settle()
        assert runner.sizes == [2]  # full at 2: no waiting for the two still on their way
        for image in images[2:]:
            arrivals.leave()
            futures.append(asyncio.ensure_future(
                batcher.submit(Predictor.tensors(loaded, [image]), 1)))
        return await asyncio.wait_for(asyncio.gather(*futures), 60)

    results = asyncio.run(main())
    assert sum(runner.sizes) == 4 and max(runner.sizes) <= 2
    for image, result in zip(images, results):
        assert_same(result, Predictor.predict(loaded, [image], 1))


def test_the_default_runner_uses_a_worker_thread():
    """No run_sync: the pass runs in anyio's thread pool, off the event loop's thread."""
    import threading

    loaded = loaded_model()
    images = random_images(4, seed=11)
    threads = []
    real = Predictor.probabilities

    def spy(loaded_, batch):
        threads.append(threading.get_ident())
        return real(loaded_, batch)

    batcher = Batcher(loaded, window_s=0, max_images=64)

    async def main():
        return await asyncio.gather(*[batcher.submit(Predictor.tensors(loaded, [im]), 2)
                                      for im in images])

    Predictor.probabilities = staticmethod(spy)
    try:
        results = asyncio.run(main())
    finally:
        Predictor.probabilities = staticmethod(real)
    assert threads and threading.get_ident() not in threads
    assert batcher.passes < len(images)  # all four were queued before the first pass
    for image, result in zip(images, results):
        assert_same(result, real_predict(loaded, image, 2))


def real_predict(loaded, image, k):
    return Predictor.ranked(loaded, Predictor.probabilities(
        loaded, Predictor.tensors(loaded, [image])), k)


def test_cancelled_requests_are_skipped():
    loaded, images, arrivals, runner, batcher = make(3, 12)

    async def main():
        first = asyncio.ensure_future(batcher.submit(Predictor.tensors(loaded, images[:1]), 1))
        await settle()
        gone = asyncio.ensure_future(batcher.submit(Predictor.tensors(loaded, images[1:2]), 1))
        kept = asyncio.ensure_future(batcher.submit(Predictor.tensors(loaded, images[2:3]), 1))
        await settle()
        gone.cancel()  # the client went away
        await settle()
        runner.release()
        return await first, await kept

    first, kept = asyncio.run(main())
    assert runner.sizes == [1, 1]
    assert_same(kept, Predictor.predict(loaded, images[2:3], 1))
    assert torch.is_tensor(Predictor.tensors(loaded, images[:1]))
