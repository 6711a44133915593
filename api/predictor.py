"""Models for /predict: decoded from checkpoints once, kept in a bounded LRU cache."""
from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio.to_thread
import numpy as np
import torch
from PIL import Image

import models
from core import checkpoint_format as ckpt
from core.artifacts import ArtifactStore
from core.image_decode import load_image, normalize, release_freed_memory, to_uint8
from core.program_models import build_for_checkpoint

# Decoding this many pixels in a request leaves enough freed memory to hand back at its end;
# fewer (the usual small images) leave too little to be worth it.
RELEASE_AFTER_PIXELS = 1_000_000


@dataclass
class LoadedModel:
    model: torch.nn.Module
    classes: list[str]
    shape: tuple[int, int, int]
    mean: torch.Tensor
    std: torch.Tensor
    epoch: int
    # Its micro-batcher (/predict's event loop makes it on first use): it leaves the
    # cache with the model.
    batcher: "Batcher | None" = field(default=None, repr=False, compare=False)


class Predictor:
    def __init__(self, store: ArtifactStore, capacity: int):
        self.store, self.capacity = store, capacity
        self._cache: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job_id: str, storage_key: str, sha256: str) -> LoadedModel:
        key = (storage_key, sha256)  # a rewritten file has a new hash: never serve a stale one
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        loaded = self._load(storage_key)
        with self._lock:
            self._cache[key] = loaded
            self._cache.move_to_end(key)
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return loaded

    def _load(self, storage_key: str) -> LoadedModel:
        with self.store.open(storage_key) as f:
            blob = ckpt.load(f)
        arch = blob["architecture"]
        shape = tuple(arch["input_shape"])
        try:
            model = build_for_checkpoint(self.store, arch)
            model.load_state_dict(blob["model_state"])
        except (ValueError, RuntimeError, KeyError) as exc:
            # Written by another version of the architecture (or of trainhub): the caller's
            # 409 says so rather than a 500.
            raise ckpt.CheckpointError(f"its weights do not fit {arch['name']} as this "
                                       f"server builds it: {str(exc).splitlines()[0]}") from None
        models.set_mode(model, False)
        norm = blob["normalization"]
        return LoadedModel(model, list(blob["classes"]), shape,  # type: ignore[arg-type]
                           torch.tensor(norm["mean"]).view(1, -1, 1, 1),
                           torch.tensor(norm["std"]).view(1, -1, 1, 1), blob["epoch"])

    @staticmethod
    def predict(loaded: LoadedModel, images: list[Image.Image], top_k: int) -> list[list[dict]]:
        """Top-k classes per image, all images in one forward pass."""
        probs = Predictor.probabilities(loaded, Predictor.tensors(loaded, images))
        return Predictor.ranked(loaded, probs, top_k)

    @staticmethod
    def tensors(loaded: LoadedModel, images: Sequence[Image.Image]) -> torch.Tensor:
        """uint8 (N, C, H, W) in the model's stored shape."""
        batch = torch.empty((len(images), *loaded.shape), dtype=torch.uint8)
        for row, image in zip(batch.numpy(), images):
            row[...] = _in_shape(image, loaded.shape)
        return batch

    @staticmethod
    def decode(loaded: LoadedModel, opened: Sequence[tuple[str, Image.Image]]) -> torch.Tensor:
        """tensors() of (name, image) pairs opened but not decoded (core.image_decode.open_image):
        each is decoded, converted and closed before the next is decoded, so that the
        pixels of one image at most are held at a time, whatever the request holds."""
        batch = torch.empty((len(opened), *loaded.shape), dtype=torch.uint8)
        pixels = 0
        try:
            for row, (name, image) in zip(batch.numpy(), opened):
                pixels += image.width * image.height
                try:
                    row[...] = _in_shape(load_image(image, name), loaded.shape)
                finally:
                    image.close()  # its pixels go now (leaving a `with` block keeps them)
        finally:
            if pixels >= RELEASE_AFTER_PIXELS:
                release_freed_memory()
        return batch

    @staticmethod
    def probabilities(loaded: LoadedModel, batch: torch.Tensor) -> torch.Tensor:
        """Softmax over the classes, one row per image: the forward pass."""
        with torch.inference_mode():
            return torch.softmax(loaded.model(normalize(batch, loaded.mean, loaded.std)), dim=1)

    @staticmethod
    def ranked(loaded: LoadedModel, probs: torch.Tensor, top_k: int) -> list[list[dict]]:
        values, indices = probs.topk(top_k, dim=1)
        return [[{"label": loaded.classes[i], "index": i, "probability": p}
                 for p, i in zip(vals.tolist(), idxs.tolist())]
                for vals, idxs in zip(values, indices)]


def _in_shape(image: Image.Image, shape: tuple[int, int, int]) -> np.ndarray:
    channels, height, width = shape
    return to_uint8(image, channels, (width, height))


class Arrivals:
    """/predict requests on their way to a Batcher (counted from the route's start until
    they submit or fail): a collector only waits for more while there are some."""

    def __init__(self):
        self.count = 0
        self._watchers: set[asyncio.Event] = set()

    def enter(self) -> None:
        self.count += 1

    def leave(self) -> None:
        """Once per request: right before it submits, or when it fails before that."""
        self.count -= 1
        for event in self._watchers:
            event.set()

    def watch(self, event: asyncio.Event) -> None:
        self._watchers.add(event)

    def unwatch(self, event: asyncio.Event) -> None:
        self._watchers.discard(event)


class Batcher:
    """Micro-batching for one loaded model (the way TorchServe and Triton batch): requests
    submit their already decoded images; one collector at a time stacks what is queued (up
    to max_images) into ONE forward pass in a worker thread and hands each request its rows.

    Adaptive window: a lone request runs at once. The collector waits (at most window
    seconds) for more only while other /predict requests are still on their way
    (`arrivals.count > 0`: parsed, looked up, decoding); while a forward pass runs, new
    requests queue and go together into the next one. Models never mix: one Batcher per
    loaded model, so shapes and normalisation are the model's own."""

    def __init__(self, loaded: LoadedModel, window_s: float, max_images: int,
                 arrivals: Arrivals | None = None, run_sync=None):
        self.loaded, self.window_s, self.max_images = loaded, window_s, max_images
        self.arrivals = arrivals or Arrivals()
        self._run_sync = run_sync  # (fn, *args) -> awaitable; default anyio.to_thread
        self._queue: deque[tuple[torch.Tensor, int, asyncio.Future]] = deque()
        self._collecting = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._wakeup: asyncio.Event | None = None
        # Counters for tests and logs: forward passes run, requests and images answered,
        # and the times the collector waited for more.
        self.passes = self.requests = self.images = self.waits = 0
        self.batch_sizes: list[int] = []  # requests per forward pass, the newest last 100

    async def submit(self, tensors: torch.Tensor, top_k: int) -> list[list[dict]]:
        """tensors: uint8 (N, C, H, W) in the model's shape; top_k per request."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests' clients): nothing carries over
            self._loop, self._collecting, self._wakeup = loop, False, None
            self._queue.clear()
        future = loop.create_future()
        self._queue.append((tensors, top_k, future))
        if self._wakeup is not None:
            self._wakeup.set()
        if not self._collecting:
            self._collecting = True
            self._task = loop.create_task(self._collect())  # referenced: not collected
        return await future

    def _take(self, batch: list) -> int:
        images = sum(len(t) for t, _k, _f in batch)
        while self._queue and (not batch or images + len(self._queue[0][0]) <= self.max_images):
            item = self._queue.popleft()
            if item[2].cancelled():
                continue
            batch.append(item)
            images += len(item[0])
        return images

    async def _collect(self) -> None:
        try:
            while self._queue:
                batch: list = []
                images = self._take(batch)
                if self.window_s > 0 and images < self.max_images and self.arrivals.count:
                    self.waits += 1
                    deadline = asyncio.get_running_loop().time() + self.window_s
                    self._wakeup = wakeup = asyncio.Event()
                    self.arrivals.watch(wakeup)
                    try:
                        while images < self.max_images and self.arrivals.count:
                            left = deadline - asyncio.get_running_loop().time()
                            if left <= 0:
                                break
                            wakeup.clear()
                            try:
                                await asyncio.wait_for(wakeup.wait(), left)
                            except asyncio.TimeoutError:
                                break
                            images = self._take(batch)
                    finally:
                        self._wakeup = None
                        self.arrivals.unwatch(wakeup)
                        images = self._take(batch)
                if batch:
                    await self._run(batch)
        finally:
            self._collecting = False

    async def _run(self, batch: list) -> None:
        self.passes += 1
        self.requests += len(batch)
        self.batch_sizes = [*self.batch_sizes[-99:], len(batch)]
        stacked = batch[0][0] if len(batch) == 1 else torch.cat([t for t, _k, _f in batch])
        self.images += len(stacked)
        try:
            if self._run_sync is not None:
                probs = await self._run_sync(Predictor.probabilities, self.loaded, stacked)
            else:
                probs = await anyio.to_thread.run_sync(Predictor.probabilities, self.loaded,
                                                       stacked)
        except Exception as exc:  # noqa: BLE001 - every request of this pass gets it
            for _t, _k, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for tensors, top_k, future in batch:
            rows = probs[start:start + len(tensors)]
            start += len(tensors)
            if not future.done():
                future.set_result(Predictor.ranked(self.loaded, rows, top_k))
