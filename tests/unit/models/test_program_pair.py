"""models.program_pair.ProgramPair on a network torchvision does not have (conv, BatchNorm,
Dropout, a residual block; tests/programs.py), saved in train and eval mode and loaded with
core.program_archive.load_checked: it computes what the eager module computes, trains with
loss.backward() and torch.optim, switches modes, and its state_dict is the eager module's."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import models
from core.program_archive import load_checked
from models.program_pair import ProgramPair
from tests import programs
from tests.programs import CLASSES, images
from tests.unit.factories import one_torch_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture
def pair(tmp_path) -> ProgramPair:
    train, eval_ = programs.residual_pair(tmp_path)
    return ProgramPair(load_checked(train), load_checked(eval_))


def test_eval_outputs_equal_an_eager_copy_with_the_same_weights(pair):
    eager = programs.ResidualNet()
    with torch.no_grad():  # other weights than the export's, given to both
        for p in eager.parameters():
            p.normal_(0, 0.3)
        eager.stem[1].running_mean.uniform_(-0.5, 0.5)
        eager.stem[1].running_var.uniform_(0.5, 1.5)
    pair.load_state_dict(eager.state_dict())
    pair.eval(), eager.eval()
    x = images(6, seed=3)
    with torch.no_grad():
        assert torch.equal(pair(x), eager(x))  # the same aten ops on the same tensors


def test_state_dict_names_are_the_eager_modules(pair):
    eager = programs.residual_net()
    assert list(pair.state_dict()) == list(eager.state_dict())
    assert [n for n, _ in pair.named_parameters()] == [n for n, _ in eager.named_parameters()]
    for name, tensor in eager.state_dict().items():
        assert torch.equal(pair.state_dict()[name], tensor), name


def test_five_sgd_steps_lower_the_loss(pair):
    y = torch.arange(16) % CLASSES
    offsets = torch.randn(CLASSES, 3, generator=torch.Generator().manual_seed(1)) * 2
    x = images(16, seed=1) + offsets[y][:, :, None, None]  # each class its colour
    optimizer = torch.optim.SGD(pair.parameters(), lr=0.3, momentum=0.9)
    models.set_mode(pair, True)
    torch.manual_seed(0)  # dropout's and stochastic depth's draws
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = F.cross_entropy(pair(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in pair.parameters())
    assert losses[-1] < 0.7 * losses[0], losses  # measured: 1.54 to 0.85


def test_set_mode_switches_the_graph(pair):
    x = images(8, seed=2)
    stats = pair.get_submodule("stem.1").running_mean.clone()
    models.set_mode(pair, True)
    assert pair.training
    with torch.no_grad():
        torch.manual_seed(0)
        first = pair(x)
        torch.manual_seed(1)
        assert not torch.equal(first, pair(x))  # dropout is on
    assert not torch.equal(pair.get_submodule("stem.1").running_mean, stats)  # BatchNorm's statistics move
    assert int(pair.get_submodule("stem.1").num_batches_tracked) == 2
    models.set_mode(pair, False)
    assert not pair.training
    stats = pair.get_submodule("stem.1").running_mean.clone()
    with torch.no_grad():
        assert torch.equal(pair(x), pair(x))
    assert torch.equal(pair.get_submodule("stem.1").running_mean, stats)
    pair.set_mode(True)
    assert pair.training and pair.get_submodule("stem.1").training


def test_a_lone_program_serves_both_modes(tmp_path):
    net = programs.PlainNet()
    path = programs.save(programs.export(net, training=True), tmp_path / "plain.pt2")
    pair = ProgramPair(load_checked(path))
    x = images(3)
    with torch.no_grad():
        models.set_mode(pair, True)
        trained = pair(x)
        models.set_mode(pair, False)
        assert torch.equal(pair(x), trained)
        assert torch.allclose(pair(x), net(x), rtol=0, atol=1e-6)
    assert pair.min_train_batch == 1


def test_a_functional_program_updates_its_buffers_too(tmp_path):
    """An ATen-dialect program (run_decompositions) returns BatchNorm's new statistics."""
    net = programs.residual_net()
    functional = programs.export(net, training=True).run_decompositions()
    path = programs.save(functional, tmp_path / "aten.pt2")
    pair = ProgramPair(load_checked(path), load_checked(programs.residual_pair(tmp_path)[1]))
    stats = pair.get_submodule("stem.1").running_var.clone()
    models.set_mode(pair, True)
    with torch.no_grad():
        pair(images(8))
    net.train()
    with torch.no_grad():
        net(images(8))
    assert not torch.equal(pair.get_submodule("stem.1").running_var, stats)
    assert torch.allclose(pair.get_submodule("stem.1").running_var, net.stem[1].running_var, atol=1e-6)
    assert pair.min_train_batch == 2


def test_a_deep_copy_keeps_one_set_of_tensors(pair):
    twin = copy.deepcopy(pair)
    with torch.no_grad():
        twin.head.weight.zero_()
        twin.head.bias.fill_(1.0)
    twin.eval()
    with torch.no_grad():
        assert torch.equal(twin(images(2)), torch.ones(2, CLASSES))
    assert not torch.equal(pair.head.weight, twin.head.weight)


def test_it_runs_on_the_device_it_is_moved_to(pair):
    """The train graph makes stochastic depth's noise with aten.empty(..., device=cpu), as
    exported: moved to another device (meta here, standing in for a GPU) the pair makes it
    there, in both modes, and back on the CPU it computes what it did."""
    x = images(4)
    pair.eval()
    with torch.no_grad():
        before = pair(x)
    state = copy.deepcopy(pair.state_dict())
    pair.to("meta")
    for training in (True, False):
        pair.set_mode(training)
        out = pair(torch.zeros(4, *programs.SHAPE, device="meta"))
        assert out.device.type == "meta" and out.shape == (4, CLASSES)
    pair.to_empty(device="cpu")
    pair.load_state_dict(state)
    pair.eval()
    with torch.no_grad():
        assert torch.equal(pair(x), before)
    pair.train()
    assert pair(x).shape == (4, CLASSES)
