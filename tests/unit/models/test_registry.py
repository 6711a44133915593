"""models.set_mode: the one way the loop switches between train and eval mode."""
from __future__ import annotations

import torch
from torch import nn

import models
from core.jobspec import Hyperparameters
from tests.unit.factories import synthetic_dataset
from worker.control import RunControl
from worker.loop import fit


class TwoPrograms(nn.Module):
    """Stands for a model that cannot take nn.Module.train(): it refuses it and switches
    between two forwards by a set_mode of its own, as an exported program pair will."""

    def __init__(self, dataset):
        super().__init__()
        c, h, w = dataset.shape
        self.fc = nn.Linear(c * h * w, len(dataset.classes))
        self.program = "eval"
        self.modes: list[str] = []

    def train(self, mode: bool = True):
        raise RuntimeError("Calling train() is not supported yet.")  # as torch.export's

    def set_mode(self, training: bool) -> None:
        self.program = "train" if training else "eval"
        self.modes.append(self.program)

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out if self.program == "eval" else out * 1.0


def test_set_mode_uses_nn_train_or_the_model_s_own():
    plain = nn.Sequential(nn.Dropout(0.5))
    models.set_mode(plain, training=False)
    assert not plain.training and not plain[0].training
    models.set_mode(plain, training=True)
    assert plain.training and plain[0].training


def test_fit_switches_a_model_with_its_own_set_mode_only():
    dataset = synthetic_dataset(16, 8, (1, 4, 4), 3, seed=0)
    model = TwoPrograms(dataset)
    result = fit(model, dataset, Hyperparameters(epochs=2, batch_size=4, log_every=2),
                 torch.device("cpu"), RunControl())
    assert not result.stopped
    # each epoch trains, then evaluates on the test split (the oneDNN probe evaluates first)
    assert model.modes[-4:] == ["train", "eval", "train", "eval"]
