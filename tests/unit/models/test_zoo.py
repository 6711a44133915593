"""torchvision's zoo as trainhub models (models.zoo, models.zoo_table, models.heads): names,
the input adapter (resize on the device, grayscale to three channels), the image size that
a checkpoint carries, and each family's classifier head."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
from models.heads import HEAD_PATHS, find_head, head_outputs, replace_head
from models.zoo import ZooNet, build_network
from models.zoo_table import ZOO_PREFIX, as_size, load_zoo

ZOO = load_zoo()
# The smallest architecture of each family: where models.heads says its head is.
ONE_PER_FAMILY = {}
for _arch in sorted(ZOO.values(), key=lambda a: a.parameters_at_10):
    ONE_PER_FAMILY.setdefault(_arch.family, _arch)


def small_model(name="torchvision.mobilenet_v3_small", shape=(1, 8, 8), classes=4) -> ZooNet:
    torch.manual_seed(0)
    return models.build(name, shape, classes)


# ---- names -----------------------------------------------------------------------------------

def test_every_zoo_architecture_is_a_model_value_beside_the_four_built_ins():
    assert models.BUILTIN_MODEL_NAMES == ("cnn", "lenet", "mlp", "resnet18")
    assert set(models.MODEL_NAMES) == set(models.BUILTIN_MODEL_NAMES) | set(ZOO)
    assert len(ZOO) == 80 and all(n.startswith(ZOO_PREFIX) for n in ZOO)
    assert "torchvision.resnet18" in models.MODEL_NAMES
    assert "torchvision.resnet18" in models.MODELS["resnet18"].description


def test_the_built_in_resnet18_keeps_its_small_image_stem_and_the_zoo_s_is_torchvision_s():
    builtin = models.build("resnet18", (3, 32, 32), 10)
    assert builtin.conv1.kernel_size == (3, 3) and isinstance(builtin.maxpool, nn.Identity)
    zoo = models.build("torchvision.resnet18", (3, 32, 32), 10)
    assert isinstance(zoo, ZooNet)
    assert zoo.net.conv1.kernel_size == (7, 7) and isinstance(zoo.net.maxpool, nn.MaxPool2d)


@pytest.mark.parametrize("name, suggested", [
    ("resnet50", "torchvision.resnet50"), ("mobilenet_v3_smal", "torchvision.mobilenet_v3_small"),
    ("torchvision.swin", None), ("vgg", None)])
def test_an_unknown_name_says_what_is_allowed_and_the_closest(name, suggested):
    with pytest.raises(ValueError) as excinfo:
        models.build(name, (3, 32, 32), 10)
    message = str(excinfo.value)
    assert message.startswith(f"unknown model {name!r}")
    assert "allowed: cnn, lenet, mlp, resnet18, or torchvision.<name>" in message
    assert "GET /models" in message
    if suggested:
        assert f"did you mean {suggested!r}" in message


def test_the_catalog_imports_without_torch():
    import subprocess
    import sys

    script = ("import sys, models, core.jobspec\n"
              "assert 'torch' not in sys.modules, 'torch imported'\n"
              "print(len(models.MODEL_NAMES))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0 and result.stdout == "84\n", result.stderr


# ---- sizes -----------------------------------------------------------------------------------

def test_image_size_defaults_raise_the_dataset_s_size_to_the_minimum():
    inception = ZOO["torchvision.inception_v3"]
    assert inception.image_size((28, 28)) == (75, 75)
    assert inception.image_size((28, 100)) == (75, 100)
    assert inception.image_size((28, 28), (80, 90)) == (80, 90)
    assert ZOO["torchvision.vit_b_16"].image_size((32, 32)) == (224, 224)
    assert ZOO["torchvision.maxvit_t"].fixed_size == (224, 224)
    assert ZOO["torchvision.resnet50"].image_size((32, 32)) == (32, 32)
    assert as_size(64) == (64, 64) and as_size([64, 48]) == (64, 48) and as_size(None) is None


def test_size_problems_name_what_is_allowed():
    assert ZOO["torchvision.inception_v3"].size_problem((75, 75)) is None
    assert "at least 75x75" in ZOO["torchvision.inception_v3"].size_problem((74, 300))
    assert "exactly 224x224" in ZOO["torchvision.vit_b_16"].size_problem((256, 256))
    assert ZOO["torchvision.vit_b_16"].size_problem((224, 224)) is None


def test_parameters_at_another_class_count():
    arch = ZOO["torchvision.resnet50"]
    assert arch.parameters(10) == arch.parameters_at_10 == 23_528_522
    assert arch.parameters(1000) == 25_557_032  # torchvision's ImageNet ResNet-50


# ---- the input adapter -----------------------------------------------------------------------

def test_grayscale_images_are_resized_on_the_device_then_repeated_to_three_channels():
    model = small_model()
    assert model.image_size == (8, 8)  # mobilenet_v3_small trains at any size: none here
    assert models.set_image_size(model, (1, 8, 8), [32, 40]) == (32, 40)
    seen = []
    model.net.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    model.eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 4)
    expected = F.interpolate(x, size=(32, 40), mode="bilinear", align_corners=False,
                             antialias=False).expand(-1, 3, -1, -1)
    assert seen[0].shape == (2, 3, 32, 40) and torch.equal(seen[0], expected)
    with torch.no_grad():
        assert torch.equal(model(x), model.net(expected))


def test_images_already_at_the_size_go_through_untouched():
    model = small_model(shape=(3, 16, 16))
    seen = []
    model.net.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        model(x)
    assert seen[0] is x


def test_a_size_the_architecture_cannot_take_is_refused_when_set():
    model = small_model("torchvision.squeezenet1_1", (3, 32, 32))
    with pytest.raises(ValueError, match="at least 17x17"):
        models.set_image_size(model, (3, 32, 32), 16)
    with pytest.raises(ValueError, match="1-channel .* or 3-channel"):
        models.build("torchvision.squeezenet1_1", (2, 32, 32), 3)


def test_built_ins_take_the_dataset_as_it_is():
    lenet = models.build("lenet", (1, 8, 8), 10)
    assert models.set_image_size(lenet, (1, 8, 8), None) is None
    assert models.min_train_batch(lenet) == 1
    assert models.min_train_batch(models.build("cnn", (1, 8, 8), 10)) == 1  # has BatchNorm
    assert models.min_train_batch(small_model()) == 2
    assert models.min_train_batch(small_model("torchvision.swin_t", (3, 8, 8))) == 1


def test_the_image_size_travels_in_the_state_dict_and_loads_with_weights_only():
    model = small_model()
    models.set_image_size(model, (1, 8, 8), [24, 20])
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    assert state["_extra_state"].tolist() == [24, 20]
    fresh = small_model()
    assert fresh.image_size == (8, 8)
    fresh.load_state_dict(state)
    assert fresh.image_size == (24, 20)
    x = torch.randn(1, 1, 8, 8)
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))


@pytest.mark.parametrize("name", ["torchvision.mnasnet0_5", "torchvision.mnasnet1_3"])
def test_a_checkpoint_s_tensors_load_without_the_modules_versions(name):
    """A checkpoint keeps the state's tensors as a plain dict (worker.checkpointing), not
    the `_metadata` of module versions that MNASNet refuses to load without."""
    model = small_model(name, (3, 8, 8), 3)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert not hasattr(state, "_metadata")
    fresh = small_model(name, (3, 8, 8), 3)
    with torch.no_grad():
        next(fresh.parameters()).add_(1)
    fresh.load_state_dict(state)
    assert all(torch.equal(v, state[k]) for k, v in fresh.state_dict().items())


@pytest.mark.parametrize("name", ["torchvision.googlenet", "torchvision.inception_v3"])
def test_auxiliary_heads_are_off_and_training_gives_the_logits(name):
    arch = ZOO[name]
    model = small_model(name, (3, arch.min_size, arch.min_size), 5)
    assert model.net.aux_logits is False
    model.train()
    out = model(torch.randn(2, 3, arch.min_size, arch.min_size))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)


# ---- classifier heads ------------------------------------------------------------------------

def test_every_family_of_the_table_has_a_head_path():
    assert {a.family for a in ZOO.values()} == set(HEAD_PATHS)


@pytest.mark.parametrize("family", sorted(ONE_PER_FAMILY))
def test_the_head_is_where_models_heads_says_and_can_be_replaced(family):
    arch = ONE_PER_FAMILY[family]
    # The meta device: shapes without memory or initialisation (regnet computes its widths
    # with tensors, which meta cannot give back: built for real, the smallest is small).
    device = "cpu" if family == "regnet" else "meta"
    with torch.device(device):
        net = build_network(arch.name, 7)
        _, _, head = find_head(net, family)
        assert head_outputs(head) == 7
        bias = head.bias is not None  # maxvit's head has none
        new = (nn.Conv2d(head.in_channels, 3, 1, bias=bias) if isinstance(head, nn.Conv2d)
               else nn.Linear(head.in_features, 3, bias=bias))
    replace_head(net, family, new)
    assert find_head(net, family)[2] is new
    assert sum(p.numel() for p in net.parameters()) == arch.parameters(3)
