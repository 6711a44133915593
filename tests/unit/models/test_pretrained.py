"""Pretrained weights (models.pretrained) without a network: weights entries the tests define,
pointing at files the tests write under a TORCH_HOME of their own, named as torchvision's
are (<name>-<sha256 prefix>.pth). The file is checked against its name's hash on every load
and read with weights_only; a missing one names the file, its folder and its URL in one line;
the published head is replaced on every listed architecture (on the meta device)."""
from __future__ import annotations

import hashlib
import os
import shutil
from collections import OrderedDict
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torch import nn
from torchvision.models import get_model, get_model_weights
from torchvision.models.regnet import BlockParams

import models
from models import pretrained
from models.heads import find_head, head_outputs
from models.pretrained import PretrainedError, Weights
from models.zoo_table import load_zoo
from tests import pretrained_files as files
from tests.pretrained_files import CATEGORIES, IMAGENET
from tests.unit.factories import one_torch_thread

ZOO = load_zoo()
ARCH = "shufflenet_v2_x0_5"  # the smallest with BatchNorm: 0.35M parameters


def published_state(name: str = ARCH, seed: int = 1) -> OrderedDict:
    return files.published_state(name, seed)


def write_weights(folder: Path, state, stem: str = ARCH, prefix: str | None = None) -> Path:
    return files.write_weights(folder, state, stem, prefix)


def entry(path_or_name, categories=CATEGORIES) -> Weights:
    return files.weights_entry(str(path_or_name), categories)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def offline(url: str, path: str) -> None:
    raise URLError("[Errno -3] Temporary failure in name resolution")


def small_model(classes: int = 3, name: str = ARCH):
    torch.manual_seed(0)
    return models.build(f"torchvision.{name}", (3, 8, 8), classes)


# ---- the file: where it is, its hash, weights_only -------------------------------------------

def test_the_cache_folder_is_torch_hub_s_under_torch_home(torch_home):
    assert pretrained.cache_folder() == torch_home
    assert pretrained.cache_folder() == Path(torch.hub.get_dir()) / "checkpoints"


def test_a_matching_file_loads_with_the_published_head_then_gets_the_model_s_own(torch_home):
    state = published_state()
    path = write_weights(torch_home, state)
    model = small_model(3)
    fresh = model.head()
    fresh_weight = fresh.weight.detach().clone()

    note = pretrained.load_pretrained(model, entry(path), ["a", "b", "c"], download=offline)

    assert note == (f"started from TestNet_Weights.IMAGENET1K_V1 ({path}); its head replaced "
                    "by a new one for the dataset's 3 classes")
    assert model.head() is fresh and head_outputs(fresh) == 3
    assert torch.equal(fresh.weight, fresh_weight)  # torchvision's own initialisation
    loaded = model.net.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(loaded[key], value), key


def test_the_dataset_s_classes_being_the_weights_own_keep_the_published_head(torch_home):
    state = published_state()
    path = write_weights(torch_home, state)
    model = small_model(1000)
    note = pretrained.load_pretrained(model, entry(path), list(CATEGORIES))
    assert note.endswith("its head and classes kept")
    assert torch.equal(model.head().weight, state["fc.weight"])
    # As many classes, but others: a new head.
    model = small_model(1000)
    pretrained.load_pretrained(model, entry(path), [f"mine{i}" for i in range(1000)])
    assert not torch.equal(model.head().weight, state["fc.weight"])


def test_a_file_unlike_its_name_s_hash_is_refused_in_one_line(torch_home):
    path = write_weights(torch_home, published_state(), prefix="0badc0de")
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PretrainedError) as excinfo:
        pretrained.load_pretrained(model, entry(path), ["a", "b", "c"], download=offline)
    message = str(excinfo.value)
    assert message == (f"the weights file {path} does not match its name's hash: its sha256 "
                       f"starts {hashlib.sha256(path.read_bytes()).hexdigest()[:8]}, its name "
                       "says 0badc0de; delete it and put the published file there")
    assert "\n" not in message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_file_with_no_hash_in_its_name_is_refused(torch_home):
    path = torch_home / f"{ARCH}.pth"
    torch_home.mkdir(parents=True)
    torch.save(published_state(), path)
    with pytest.raises(PretrainedError, match="has no sha256 prefix in its name"):
        pretrained.check_hash(path)


def test_a_missing_file_offline_names_the_file_its_folder_and_its_url_in_one_line(torch_home):
    weights = entry(f"{ARCH}-12345678.pth")
    with pytest.raises(PretrainedError) as excinfo:
        pretrained.load_pretrained(small_model(), weights, ["a", "b", "c"], download=offline)
    message = str(excinfo.value)
    assert message == (
        f"the weights file {ARCH}-12345678.pth is not in {torch_home} and could not be "
        f"downloaded from {weights.url} (URLError: <urlopen error [Errno -3] Temporary "
        "failure in name resolution>); put that file in that folder "
        "(docs/operations.md#pretrained-weights-offline)")
    assert "\n" not in message
    assert list(torch_home.iterdir()) == []


def test_a_missing_file_is_downloaded_into_the_cache_and_checked(torch_home, tmp_path):
    """torch hub's own download (a file: URL here: no network) into the cache folder."""
    source = write_weights(tmp_path / "mirror", published_state())
    weights = Weights("TestNet_Weights.IMAGENET1K_V1", source.as_uri(), *IMAGENET, CATEGORIES)
    model = small_model()
    pretrained.load_pretrained(model, weights, ["a", "b", "c"])
    assert (torch_home / source.name).read_bytes() == source.read_bytes()
    # A download whose bytes are not the name's is refused and never enters the cache.
    bad = tmp_path / "mirror" / f"{ARCH}-0badc0de.pth"
    shutil.copy(source, bad)
    with pytest.raises(PretrainedError, match=r"could not be downloaded from file:.*invalid "
                                              "hash value"):
        pretrained.fetch(Weights("w", bad.as_uri(), *IMAGENET, None), torch_home)
    assert sorted(p.name for p in torch_home.iterdir()) == [source.name]


class Payload:
    def __reduce__(self):
        return (os.getcwd, ())


def test_a_file_holding_code_is_not_unpickled(torch_home):
    path = write_weights(torch_home, {"fc.weight": torch.zeros(1), "x": Payload()})
    with pytest.raises(PretrainedError, match="is not a readable state dict .*Unpickl"):
        pretrained.load_pretrained(small_model(), entry(path), ["a"], download=offline)


def test_weights_of_another_architecture_are_refused(torch_home):
    path = write_weights(torch_home, published_state("mobilenet_v3_small"))
    with pytest.raises(PretrainedError, match="are not torchvision.shufflenet_v2_x0_5's: they "
                                              "have no fc.weight"):
        pretrained.load_pretrained(small_model(), entry(path), ["a"])
    state = published_state("shufflenet_v2_x1_0")
    path = write_weights(torch_home, state, stem="other")
    with pytest.raises(PretrainedError, match="do not fit torchvision.shufflenet_v2_x0_5: "
                                              "Error"):
        pretrained.load_pretrained(small_model(), entry(path), ["a"])


# ---- torchvision's weights: names, defaults, normalisation -----------------------------------

def test_every_weights_name_the_table_lists_is_torchvision_s_with_a_hashed_file_name():
    for arch in ZOO.values():
        assert set(arch.weights) == {w.name for w in get_model_weights(arch.name)}, arch.name
        for name in (*arch.weights, pretrained.DEFAULT):
            weights = pretrained.torchvision_weights(arch.name, name)
            assert pretrained.HASH_REGEX.search(weights.file_name).group(1), weights.url
            assert len(weights.mean) == len(weights.std) == 3


def test_default_is_torchvision_s_default():
    weights = pretrained.torchvision_weights("resnet50", "DEFAULT")
    assert weights.name == "ResNet50_Weights.IMAGENET1K_V2"
    assert weights.file_name == "resnet50-11ad3fa6.pth"
    assert (weights.mean, weights.std) == IMAGENET and len(weights.categories) == 1000
    spec = {"model": "torchvision.resnet50", "pretrained": "IMAGENET1K_V1"}
    assert pretrained.job_weights(spec).name == "ResNet50_Weights.IMAGENET1K_V1"
    assert pretrained.job_weights({"model": "lenet", "pretrained": None}) is None
    assert pretrained.job_normalization({"model": "lenet"}, 3) is None


def test_googlenet_and_inception_normalise_as_their_transform_input_would():
    """torchvision's transform_input=True turns ImageNet-normalised images into (x - 0.5) /
    0.5 inside the network: normalising so directly gives the network the same input."""
    for name in ("googlenet", "inception_v3"):
        weights = pretrained.torchvision_weights(name, "DEFAULT")
        assert (weights.mean, weights.std) == ((0.5,) * 3, (0.5,) * 3)
    torch.manual_seed(0)
    net = get_model("googlenet", weights=None, aux_logits=False, init_weights=True,
                    transform_input=True)
    pixels = torch.rand(2, 3, 32, 32)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in IMAGENET)
    transformed = net._transform_input((pixels - mean) / std)
    torch.testing.assert_close(transformed, (pixels - 0.5) / 0.5, rtol=0, atol=1e-6)


def test_grayscale_images_take_the_channels_average():
    weights = entry("x-1.pth")
    assert pretrained.normalization(weights, 3) == (list(IMAGENET[0]), list(IMAGENET[1]))
    mean, std = pretrained.normalization(weights, 1)
    assert mean == [pytest.approx(sum(IMAGENET[0]) / 3)]
    assert std == [pytest.approx(sum(IMAGENET[1]) / 3)]


# ---- what the published files hold that trainhub's networks do not --------------------------

@pytest.mark.filterwarnings("ignore:for .*num_batches_tracked. copying from a non-meta")
def test_densenet_s_old_key_names_are_renamed():
    """Its files are older than the names `norm1` and BatchNorm's num_batches_tracked."""
    with torch.device("meta"):
        state = published_state("densenet121")
        model = models.build("torchvision.densenet121", (3, 32, 32), 4)
    old = OrderedDict((k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."), v)
                      for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert any(".norm.1." in k for k in old) and any(".conv.2." in k for k in old)
    assert pretrained.load_state(model, old, CATEGORIES, ["a"] * 4) is False
    assert head_outputs(model.head()) == 4


def test_auxiliary_classifiers_are_left_out(torch_home):
    state = published_state("googlenet")
    assert any(k.startswith("aux1.") for k in state)
    path = write_weights(torch_home, state, stem="googlenet")
    model = small_model(3, "googlenet")
    pretrained.load_pretrained(model, entry(path), ["a", "b", "c"])
    assert model.net.aux1 is None
    assert torch.equal(model.net.conv1.conv.weight, state["conv1.conv.weight"])


def test_a_vit_s_position_embedding_is_interpolated_to_the_model_s_size():
    with torch.device("meta"):
        published = get_model("vit_b_16", weights=None, num_classes=1000, image_size=384)
        model = models.build("torchvision.vit_b_16", (3, 32, 32), 4)
    assert published.encoder.pos_embedding.shape[1] == 577
    pretrained.load_state(model, published.state_dict(), CATEGORIES, ["a"] * 4)
    assert model.net.encoder.pos_embedding.shape[1] == 197


def test_feature_weights_keep_a_fresh_initialisation_where_they_hold_no_values():
    """vgg16's IMAGENET1K_FEATURES: its classifier is NaN; the features load."""
    state = published_state("squeezenet1_1")
    state["features.3.squeeze.weight"].fill_(float("nan"))
    model = small_model(4, "squeezenet1_1")
    own = model.net.features[3].squeeze.weight.detach().clone()
    pretrained.load_state(model, state, None, ["a"] * 4)
    assert torch.equal(model.net.features[3].squeeze.weight, own)
    assert torch.equal(model.net.features[0].weight, state["features.0.weight"])


def test_weights_that_rebuild_the_layers_as_they_load_are_refused():
    """MNASNet's first version (module version 1) had another stem: loading one rebuilds
    the network, which no checkpoint of trainhub's could rebuild again."""
    torch.manual_seed(0)
    first = get_model("mnasnet0_5", weights=None)
    with pytest.warns(UserWarning, match="previous version"):  # as torchvision makes it
        first._load_from_state_dict({}, "", {"version": 1}, False, [], [], [])
    state = first.state_dict()
    assert state._metadata[""]["version"] == 1
    with pytest.warns(UserWarning, match="previous version"), \
            pytest.raises(PretrainedError, match="change torchvision.mnasnet0_5's layers"):
        pretrained.load_state(small_model(4, "mnasnet0_5"), state, CATEGORIES, ["a"] * 4)


# ---- the head, replaced after a load on every listed architecture ----------------------------

@pytest.fixture
def regnet_widths_on_the_cpu(monkeypatch):
    """regnet's builders compute their widths with tensors, which the meta device cannot
    give back: that arithmetic on the CPU, the network on meta."""
    original = BlockParams.from_init_params.__func__

    def on_cpu(cls, *args, **kwargs):
        with torch.device("cpu"):
            return original(cls, *args, **kwargs)

    monkeypatch.setattr(BlockParams, "from_init_params", classmethod(on_cpu))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_architecture_loads_its_published_state_and_gets_a_new_head(
        name, regnet_widths_on_the_cpu):
    """On the meta device: shapes and names, no memory. The published network as torchvision
    builds it for its DEFAULT weights (a ViT at their image size, auxiliary heads on)."""
    arch = ZOO[name]
    extra = {}
    if arch.family == "vision_transformer":
        size = get_model_weights(arch.name).DEFAULT.meta["min_size"][0]
        extra = {"image_size": size}
    with one_torch_thread(), torch.device("meta"):
        state = published_state(arch.name) if not extra else get_model(
            arch.name, weights=None, num_classes=1000, **extra).state_dict()
        model = models.build(name, (3, 32, 32), 5)
    fresh = model.head()
    assert pretrained.load_state(model, state, CATEGORIES, ["a"] * 5) is False
    parent, key, head = find_head(model.net, arch.family)
    assert head is fresh and head_outputs(head) == 5
    assert sum(p.numel() for p in model.parameters()) == arch.parameters(5)
    assert isinstance(head, (nn.Linear, nn.Conv2d))
