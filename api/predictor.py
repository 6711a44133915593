"""Models for /predict: decoded from checkpoints once, kept in a bounded LRU cache."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch
from PIL import Image

import models
from core import checkpoints as ckpt
from core.artifacts import ArtifactStore
from core.images import normalize, to_tensor


@dataclass
class LoadedModel:
    model: torch.nn.Module
    classes: list[str]
    shape: tuple[int, int, int]
    mean: torch.Tensor
    std: torch.Tensor
    epoch: int


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
        model = models.build(arch["name"], shape, arch["num_classes"])
        model.load_state_dict(blob["model_state"])
        model.eval()
        norm = blob["normalization"]
        return LoadedModel(model, list(blob["classes"]), shape,  # type: ignore[arg-type]
                           torch.tensor(norm["mean"]).view(1, -1, 1, 1),
                           torch.tensor(norm["std"]).view(1, -1, 1, 1), blob["epoch"])

    @staticmethod
    def predict(loaded: LoadedModel, images: list[Image.Image], top_k: int) -> list[list[dict]]:
        """Top-k classes per image, all images in one forward pass."""
        batch = torch.stack([to_tensor(im, loaded.shape) for im in images])
        with torch.inference_mode():
            probs = torch.softmax(loaded.model(normalize(batch, loaded.mean, loaded.std)), dim=1)
            values, indices = probs.topk(top_k, dim=1)
        return [[{"label": loaded.classes[i], "index": i, "probability": p}
                 for p, i in zip(vals.tolist(), idxs.tolist())]
                for vals, idxs in zip(values, indices)]
