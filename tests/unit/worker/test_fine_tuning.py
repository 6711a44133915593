"""Fine-tuning in process (worker.loop.fit): a torchvision model started from a weights file
the test writes trains with the weights' normalisation, and hyperparameters.freeze
"backbone" trains the new head alone: every other parameter, and every BatchNorm running
statistic, the same to the bit after an epoch, weight decay included."""
from __future__ import annotations

import io

import pytest
import torch

import models
from core import checkpoint_format as ckpt
from core.jobspec import Hyperparameters
from models import pretrained
from tests.pretrained_files import (
    IMAGENET,
    published_state,
    weights_entry,
    write_weights,
)
from tests.unit.factories import one_torch_thread, synthetic_dataset
from worker.checkpointing import build
from worker.control import RunControl
from worker.loop import fit
from worker.recipe import make_optimizer

CPU = torch.device("cpu")
ARCH = "shufflenet_v2_x0_5"


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture
def started(tmp_path, monkeypatch):
    """(model, dataset) as a job with `pretrained` has them: 3-channel 8x8 images of 3
    classes, normalised with the weights' mean and std, the weights loaded."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = write_weights(pretrained.cache_folder(), published_state(ARCH, calibrate=True), ARCH)
    weights = weights_entry(path.name)
    dataset = synthetic_dataset(12, 4, (3, 8, 8), 3)
    dataset = dataset.normalized_with(pretrained.normalization(weights, 3))
    torch.manual_seed(0)
    model = models.build(f"torchvision.{ARCH}", dataset.shape, 3)
    pretrained.load_pretrained(model, weights, dataset.classes)
    return model, dataset


def hp(**kwargs) -> Hyperparameters:
    return Hyperparameters(**{"epochs": 1, "batch_size": 4, "log_every": 1, **kwargs})


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_pretrained_weights_load_and_train_with_their_normalisation(started):
    model, dataset = started
    assert (dataset.mean, dataset.std) == (list(IMAGENET[0]), list(IMAGENET[1]))
    before = snapshot(model)
    files = []

    def on_epoch_end(end):
        buf = io.BytesIO()
        torch.save(build(end, {"model": f"torchvision.{ARCH}"}, dataset), buf)
        files.append(buf.getvalue())

    result = fit(model, dataset, hp(optimizer="adam", lr=0.01), CPU,
                 RunControl(on_epoch_end=on_epoch_end))
    assert not result.stopped and result.step == 3
    assert torch.isfinite(torch.tensor(result.final_metrics["train_loss"]))
    after = model.state_dict()
    assert not torch.equal(after["net.conv1.0.weight"], before["net.conv1.0.weight"])
    assert not torch.equal(after["net.fc.weight"], before["net.fc.weight"])
    # The checkpoint, hence /predict and the export, normalise as training did.
    blob = ckpt.load(files[-1])
    assert blob["normalization"] == {"mean": list(IMAGENET[0]), "std": list(IMAGENET[1])}


def test_freeze_backbone_trains_the_new_head_alone_to_the_bit(started):
    model, dataset = started
    before = snapshot(model)
    head = {f"net.fc.{name}" for name, _ in model.head().named_parameters()}
    assert head == {"net.fc.weight", "net.fc.bias"}
    buffers = [k for k in before if k.endswith(("running_mean", "running_var",
                                                "num_batches_tracked"))]
    assert buffers

    result = fit(model, dataset, hp(freeze="backbone", optimizer="adamw", lr=0.05,
                                    weight_decay=0.5), CPU,
                 RunControl())

    assert not result.stopped and result.step == 3
    after = model.state_dict()
    unchanged = [k for k in before if k not in head]
    assert [k for k in unchanged if not torch.equal(after[k], before[k])] == []
    assert all(not torch.equal(after[k], before[k]) for k in head)
    trained = [p for group in result.state.optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in trained} == {id(p) for p in model.head().parameters()}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == head


def test_a_frozen_backbone_s_batchnorm_stays_in_eval_mode_when_training(started):
    model, _ = started
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    models.set_mode(model, training=True)
    assert all(m.training for m in batchnorms)  # not frozen: as ever
    models.freeze_backbone(model)
    models.set_mode(model, training=True)
    assert model.training and model.net.training and model.head().training
    assert not any(m.training for m in batchnorms)
    models.set_mode(model, training=False)
    assert not model.training and not model.head().training


def test_freeze_is_for_torchvision_models_only():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="applies to torchvision models only"):
        models.freeze_backbone(models.build("lenet", (3, 32, 32), 10))


def test_without_freeze_the_optimizer_holds_every_parameter_in_order():
    torch.manual_seed(0)
    model = models.build("lenet", (3, 32, 32), 10)
    optimizer = make_optimizer(model, hp())
    assert optimizer.param_groups[0]["params"] == list(model.parameters())
