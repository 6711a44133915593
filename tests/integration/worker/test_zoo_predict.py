"""A torchvision model trained in process (worker.loop.fit), checkpointed as the worker
checkpoints (worker.checkpointing) and served by /predict's Predictor: the checkpoint carries
the image size, so a prediction resizes as training did."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import models
from api.predictor import Predictor
from core import checkpoint_format as ckpt
from core.artifacts import LocalArtifactStore, checkpoint_key
from core.image_decode import normalize
from core.jobspec import Hyperparameters, JobSpec
from tests.unit.factories import one_torch_thread, synthetic_dataset
from worker.checkpointing import build
from worker.control import RunControl
from worker.loop import fit


@pytest.fixture(scope="module")
def trained():
    """mobilenet_v3_small on 12 grayscale 8x8 images, 1 epoch at image_size 32x24."""
    dataset = synthetic_dataset(12, 4, (1, 8, 8), 3, class_prefix="k")
    spec = JobSpec(model="torchvision.mobilenet_v3_small", dataset="fake", device="cpu",
                   hyperparameters={"epochs": 1, "batch_size": 4, "optimizer": "adam",
                                    "lr": 0.01, "image_size": [32, 24]}).resolved()
    files = []

    def on_epoch_end(end):
        buf = io.BytesIO()
        torch.save(build(end, spec, dataset), buf)
        files.append(buf.getvalue())

    with one_torch_thread():
        torch.manual_seed(0)
        model = models.build(spec["model"], dataset.shape, len(dataset.classes))
        fit(model, dataset, Hyperparameters(**spec["hyperparameters"]), torch.device("cpu"),
            RunControl(on_epoch_end=on_epoch_end))
    return dataset, model, files[-1]


def test_the_checkpoint_carries_the_image_size_and_loads_without_code(trained):
    _, model, data = trained
    blob = ckpt.load(data)  # weights_only: tensors and plain types
    assert blob["architecture"]["name"] == "torchvision.mobilenet_v3_small"
    assert blob["architecture"]["input_shape"] == [1, 8, 8]
    assert blob["model_state"]["_extra_state"].tolist() == [32, 24]
    assert blob["spec"]["hyperparameters"]["image_size"] == [32, 24]


def test_predict_resizes_as_training_did(trained, tmp_path):
    dataset, model, data = trained
    store = LocalArtifactStore(tmp_path)
    key = checkpoint_key("job1", 1)
    _, sha = store.save(key, lambda f: f.write(data))
    loaded = Predictor(store, capacity=2).get("job1", key, sha)
    assert loaded.classes == ["k0", "k1", "k2"] and loaded.shape == (1, 8, 8)
    assert loaded.model.image_size == (32, 24)

    images = [Image.fromarray(dataset.test.images[i, 0].numpy(), mode="L") for i in range(4)]
    with one_torch_thread():
        got = Predictor.probabilities(loaded, Predictor.tensors(loaded, images))
        # What the trained network gives the test images resized and repeated by hand.
        x = normalize(dataset.test.images, loaded.mean, loaded.std)
        x = F.interpolate(x, size=(32, 24), mode="bilinear", align_corners=False)
        model.eval()
        with torch.no_grad():
            expected = torch.softmax(model.net(x.expand(-1, 3, -1, -1)), dim=1)
    assert got.shape == (4, 3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    ranked = Predictor.predict(loaded, images[:1], top_k=2)
    assert [p["label"] for p in ranked[0]] == [
        loaded.classes[i] for i in expected[0].argsort(descending=True)[:2].tolist()]
