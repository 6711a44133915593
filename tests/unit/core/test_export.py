"""core.export on every built-in model (random weights, no services): the wrapper computes
/predict's probabilities, and the .pt2 (torch.export.load) and the ONNX model (onnxruntime)
give the wrapper's, at any batch size, each naming its input and classes; an exporter's
failure is an ExportError that says which format and why."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

import models
from core.export import ExportedClassifier, ExportError, export_onnx, export_pt2
from core.image_decode import normalize
from tests.unit.factories import one_torch_thread

BUILTINS = {"lenet": (3, 32, 32), "cnn": (1, 28, 28), "mlp": (1, 8, 8),
            "resnet18": (3, 32, 32)}
CLASSES = [f"class {i}" for i in range(5)]


def classifier(name: str) -> tuple[ExportedClassifier, torch.nn.Module, tuple, tuple]:
    torch.manual_seed(0)
    shape = BUILTINS[name]
    model = models.build(name, shape, len(CLASSES)).eval()
    mean = torch.linspace(0.3, 0.5, shape[0]).view(1, -1, 1, 1)
    std = torch.linspace(0.2, 0.3, shape[0]).view(1, -1, 1, 1)
    return ExportedClassifier(model, mean, std, CLASSES, shape), model, (mean, std), shape


def images(shape, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_both_formats_give_predicts_probabilities(name, tmp_path):
    wrapped, model, (mean, std), shape = classifier(name)
    batch = images(shape, 3)
    with one_torch_thread(), torch.inference_mode():
        # /predict's own computation (api.predictor.Predictor.probabilities).
        expected = torch.softmax(model(normalize(batch, mean, std)), dim=1)
        assert torch.equal(wrapped(batch), expected)

        export_pt2(wrapped, tmp_path / "m.pt2")
        extra = {"trainhub.json": ""}
        loaded = torch.export.load(tmp_path / "m.pt2", extra_files=extra).module()
        torch.testing.assert_close(loaded(batch), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(loaded(batch[:1]), expected[:1], rtol=0, atol=1e-6)
        assert json.loads(extra["trainhub.json"]) == {
            "input": {"dtype": "uint8", "shape": ["N", *shape]}, "classes": CLASSES}

        export_onnx(wrapped, tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"),
                                           providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", *shape]
    for n in (1, 3):
        got = session.run(["probabilities"], {"images": batch[:n].numpy()})[0]
        np.testing.assert_allclose(got, expected[:n].numpy(), rtol=0, atol=1e-5)
    meta = json.loads(session.get_modelmeta().custom_metadata_map["trainhub"])
    assert meta["classes"] == CLASSES
    assert len(onnx.load(str(tmp_path / "m.onnx")).graph.initializer) > 0  # weights inside


def test_the_wrapper_holds_copies_and_trains_nothing():
    wrapped, _model, (mean, _std), _shape = classifier("mlp")
    mean += 1  # the caller's tensors change: the wrapper's buffers do not
    assert wrapped.mean.flatten().tolist() == pytest.approx([0.3])
    assert not wrapped.training and not any(p.requires_grad for p in wrapped.parameters())


@pytest.mark.parametrize("fmt, export", [("pt2", export_pt2), ("onnx", export_onnx)])
def test_an_exporters_failure_is_an_export_error_naming_the_format(fmt, export, tmp_path,
                                                                   monkeypatch):
    wrapped, *_ = classifier("mlp")

    def fails(*_args, **_kwargs):
        raise NotImplementedError("aten::weird_op has no exporter\nstack lines ...")

    monkeypatch.setattr(torch.export if fmt == "pt2" else torch.onnx, "export", fails)
    with pytest.raises(ExportError) as caught:
        export(wrapped, tmp_path / f"m.{fmt}")
    assert str(caught.value) == (f"the network cannot be exported as {fmt}: "
                                 "NotImplementedError: aten::weird_op has no exporter")
    assert not (tmp_path / f"m.{fmt}").exists()
