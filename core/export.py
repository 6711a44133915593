"""A trained network as a deployable file: a torch.export archive (.pt2, loaded with torch
alone: torch.export.load(path).module()) or an ONNX model (torch.onnx's dynamo exporter).

What is exported is /predict's whole path from pixels to probabilities, so a deployment
needs nothing of trainhub: uint8 images (N, C, H, W) at the dataset's size in, the
checkpoint's normalisation, the network (a torchvision model resizes to its image_size
inside its own forward, models.zoo, and is traced with it), softmax, probabilities (N, K)
out, in the order of the checkpoint's classes. The batch dimension is dynamic. Each file
names its classes and input shape itself: the .pt2's extra file `trainhub.json`, the ONNX
model's metadata `trainhub` (the same JSON).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from core.image_decode import normalize

FORMATS = ("pt2", "onnx")
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"
METADATA = "trainhub"  # the .pt2's extra file `trainhub.json`, the ONNX metadata key
# Traced with two images, not one: an example batch of 1 would be specialised to 1.
EXAMPLE_BATCH = 2


class ExportError(Exception):
    """The network cannot be exported in that format; the message says why."""


class ExportedClassifier(nn.Module):
    """uint8 images (N, C, H, W) -> probabilities (N, K), as /predict computes them
    (api.predictor.Predictor.probabilities): the same normalize(), the network, softmax."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor,
                 classes: list[str], input_shape: tuple[int, int, int]):
        super().__init__()
        self.model = model
        self.classes, self.input_shape = list(classes), tuple(int(v) for v in input_shape)
        self.register_buffer("mean", mean.detach().float().reshape(1, -1, 1, 1).clone())
        self.register_buffer("std", std.detach().float().reshape(1, -1, 1, 1).clone())
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(normalize(images, self.mean, self.std)), dim=1)

    def metadata(self) -> str:
        """What a deployment reads beside the network: the input it takes, the classes."""
        return json.dumps({"input": {"dtype": "uint8", "shape": ["N", *self.input_shape]},
                           "classes": self.classes})


def _example(classifier: ExportedClassifier) -> tuple[tuple[torch.Tensor], tuple[dict]]:
    """The traced input and its dynamic shapes: a batch of any size, of the checkpoint's
    (C, H, W)."""
    batch = torch.export.Dim("batch", min=1)
    return ((torch.zeros((EXAMPLE_BATCH, *classifier.input_shape), dtype=torch.uint8),),
            ({0: batch},))


def export_pt2(classifier: ExportedClassifier, path: Path) -> None:
    """torch.export.export + torch.export.save to `path`; ExportError if it cannot."""
    args, dynamic = _example(classifier)
    with _as_export_error("pt2"):
        program = torch.export.export(classifier, args, dynamic_shapes=dynamic)
        torch.export.save(program, path,
                          extra_files={f"{METADATA}.json": classifier.metadata()})


def export_onnx(classifier: ExportedClassifier, path: Path) -> None:
    """torch.onnx.export (the dynamo exporter, onnxscript) to `path`: one file, its
    weights inside (a network over ONNX's 2 GB cannot be: ExportError)."""
    args, dynamic = _example(classifier)
    with _as_export_error("onnx"):
        program = torch.onnx.export(classifier, args, dynamo=True, dynamic_shapes=dynamic,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    verbose=False)
        program.model.metadata_props[METADATA] = classifier.metadata()
        program.save(str(path), external_data=False)


EXPORTERS = {"pt2": export_pt2, "onnx": export_onnx}


@contextmanager
def _as_export_error(fmt: str) -> Iterator[None]:
    """Any failure of an exporter (an operator it cannot trace, a size it cannot hold) as
    ExportError naming the format and the first line of the reason."""
    try:
        yield
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ExportError(f"the network cannot be exported as {fmt}: "
                          f"{type(exc).__name__}: {first}") from exc
