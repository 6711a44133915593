"""The tutorial job trains to the same numbers, to the bit, as before the worker's redesign
(tests/data/tutorial_reference.json, recorded at c8dfa6a by tests/tutorial_run.py)."""
from __future__ import annotations

import json

import pytest

from tests.tutorial_run import REFERENCE, run


@pytest.mark.slow  # 25,000 mini-batches of real CIFAR-10 (about a minute on 2 cores)
def test_the_tutorial_job_trains_bit_identically_to_the_recorded_run():
    recorded = json.loads(REFERENCE.read_text())
    got = run()
    assert len(got["loss"]) == 12  # the tutorial's six lines an epoch
    assert got["loss"] == recorded["loss"]
    assert got["epochs"] == recorded["epochs"]
