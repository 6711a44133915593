"""The model registry: every built-in architecture adapts to the dataset's shape and class
count (torchvision's zoo: test_zoo.py and test_zoo_sizes.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import models
from core.builtin_datasets import BUILTIN_DATASETS

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 48)]


@pytest.mark.parametrize("num_classes", [2, 10])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", models.BUILTIN_MODEL_NAMES)
def test_every_model_builds_for_every_shape_and_class_count(name, shape, num_classes):
    torch.manual_seed(0)
    model = models.build(name, shape, num_classes)
    assert isinstance(model, nn.Module)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
        assert out.shape == (2, num_classes)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        assert model(torch.randn(1, *shape)).shape == (1, num_classes)


@pytest.mark.parametrize("name", models.BUILTIN_MODEL_NAMES)
def test_every_model_trains_end_to_end(name):
    torch.manual_seed(0)
    model = models.build(name, (1, 8, 8), 10)
    model.train()
    out = model(torch.randn(4, 1, 8, 8))
    assert out.shape == (4, 10)
    torch.nn.functional.cross_entropy(out, torch.arange(4)).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)


@pytest.mark.parametrize("dataset", sorted(BUILTIN_DATASETS))
def test_lenet_builds_for_every_builtin_dataset(dataset):
    info = BUILTIN_DATASETS[dataset]
    model = models.build("lenet", info.shape, len(info.classes))
    assert model(torch.zeros(1, *info.shape)).shape == (1, len(info.classes))


def test_models_are_freshly_initialised_and_seedable():
    torch.manual_seed(1)
    a = models.build("lenet", (3, 32, 32), 10)
    torch.manual_seed(1)
    b = models.build("lenet", (3, 32, 32), 10)
    c = models.build("lenet", (3, 32, 32), 10)
    assert a is not b
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.state_dict()["conv1.weight"], c.state_dict()["conv1.weight"])


def _conv(layer: nn.Module, cin: int, cout: int, k: int) -> None:
    assert isinstance(layer, nn.Conv2d)
    assert (layer.in_channels, layer.out_channels, layer.kernel_size) == (cin, cout, (k, k))
    assert layer.padding == (0, 0) and layer.stride == (1, 1)


def _linear(layer: nn.Module, fin: int, fout: int) -> None:
    assert isinstance(layer, nn.Linear)
    assert (layer.in_features, layer.out_features) == (fin, fout)


def test_lenet_on_cifar_shape_is_exactly_the_tutorial_net():
    model = models.build("lenet", (3, 32, 32), 10)
    _conv(model.conv1, 3, 6, 5)
    _conv(model.conv2, 6, 16, 5)
    _linear(model.fc1, 16 * 5 * 5, 120)
    _linear(model.fc2, 120, 84)
    _linear(model.fc3, 84, 10)
    assert isinstance(model.pool, nn.MaxPool2d)
    assert (model.pool.kernel_size, model.pool.stride) == (2, 2)
    assert model.pool2 is model.pool  # both pools, as in the tutorial
    # the tutorial's Net has 62,006 parameters
    assert sum(p.numel() for p in model.parameters()) == 62006
    assert [name for name, _ in model.named_children()] == \
        ["conv1", "pool", "conv2", "fc1", "fc2", "fc3"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the tutorial's forward, layer by layer
        h = model.pool(torch.relu(model.conv1(x)))
        h = model.pool(torch.relu(model.conv2(h)))
        h = torch.flatten(h, 1)
        assert h.shape == (2, 400)
        h = torch.relu(model.fc2(torch.relu(model.fc1(h))))
        assert torch.allclose(model(x), model.fc3(h))


def test_resnet18_uses_a_small_image_stem():
    model = models.build("resnet18", (1, 28, 28), 10)
    assert model.conv1.in_channels == 1
    assert (model.conv1.kernel_size, model.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(model.maxpool, nn.Identity)
    assert model.fc.out_features == 10


def test_mlp_is_two_relu_layers_on_flattened_pixels():
    model = models.build("mlp", (3, 64, 48), 7)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3 * 64 * 48, 256), (256, 7)]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 1


@pytest.mark.parametrize("name", ["LeNet", "vgg16", "", "resnet"])
def test_unknown_model_raises_naming_the_allowed_models(name):
    with pytest.raises(ValueError) as excinfo:
        models.build(name, (3, 32, 32), 10)
    message = str(excinfo.value)
    assert repr(name) in message
    for allowed in models.BUILTIN_MODEL_NAMES:
        assert allowed in message
    assert "torchvision.<name>" in message
