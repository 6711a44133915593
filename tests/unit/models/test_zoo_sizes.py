"""The size table (models/zoo_sizes.json) against torchvision itself: every architecture
list_models returns is in it, builds as trainhub builds it (models.build), trains one SGD
step in train mode at batch 2 at the size the table gives (its minimum, or its fixed size)
and not one pixel below that minimum, has the parameters the table counts (at another class
count than the table's 10: the per-class figure is checked too), and its classifier head is
where models.heads says. Regenerate the table with scripts/zoo_sizes.py."""
from __future__ import annotations

import gc
import importlib.util
from pathlib import Path

import pytest
import torch
from torchvision import models as tv

import models
from models.heads import find_head, head_outputs, head_path_text, parameters_per_class
from models.zoo_table import ZOO_PREFIX, load_zoo, read_table
from tests.unit.factories import one_torch_thread

ROOT = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("zoo_sizes", ROOT / "scripts" / "zoo_sizes.py")
zoo_sizes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(zoo_sizes)

ZOO = load_zoo()
CLASSES = 3  # not the table's 10: parameters(K) is checked, not only the count it stores


def test_the_table_lists_every_torchvision_classification_builder():
    assert sorted(a.name for a in ZOO.values()) == sorted(tv.list_models(module=tv))
    assert len(ZOO) >= 60
    table = read_table()
    assert table["parameters_at_classes"] == 10 and table["train_batch"] == 2


@pytest.mark.slow  # all 80 built and trained: 108 s on 2 cores, vit_h_14 alone 27 s
@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_architecture_trains_one_step_at_the_table_s_size(name):
    arch = ZOO[name]
    size = arch.fixed_size[0] if arch.fixed_size else arch.min_size
    with one_torch_thread():
        torch.manual_seed(0)
        model = models.build(name, (3, size, size), CLASSES)
        net = model.net
        assert model.image_size == (size, size)  # nothing to resize at the table's size
        assert sum(p.numel() for p in model.parameters()) == arch.parameters(CLASSES)
        _, _, head = find_head(net, arch.family)
        assert head_outputs(head) == CLASSES
        assert parameters_per_class(head) == arch.parameters_per_class
        assert head_path_text(arch.family) == arch.head
        assert models.min_train_batch(model) == (2 if arch.batchnorm else 1)
        # The minimum is the minimum: a pixel less fails (forward and backward only).
        if arch.fixed_size is not None:
            assert not zoo_sizes.trains(net, size + 1), f"{name} trains at {size + 1} too"
        elif size > 1:
            assert not zoo_sizes.trains(net, size - 1), f"{name} trains at {size - 1} too"
        # One SGD step through the model as the loop calls it (train mode, batch 2).
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        out = model(torch.randn(2, 3, size, size))
        assert out.shape == (2, CLASSES)
        loss = torch.nn.functional.cross_entropy(out, torch.tensor([0, 1]))
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        optimizer.step()
    del model, net, optimizer, out, loss
    gc.collect()


def test_zoo_names_carry_the_prefix_and_never_a_built_in_s():
    assert all(name.startswith(ZOO_PREFIX) for name in ZOO)
    assert not set(ZOO) & set(models.BUILTIN_MODEL_NAMES)
