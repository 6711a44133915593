"""The tutorial job trains to the same numbers, to the bit, as before the worker's redesign
(tests/data/tutorial_reference.json, recorded with the old loop by tests/tutorial_run.py,
kernels and threads pinned so that any x86 CPU with AVX2 gives the same bits)."""
from __future__ import annotations

import json

import pytest

from tests.tutorial_run import REFERENCE, run_pinned


@pytest.mark.slow  # 25,000 mini-batches of real CIFAR-10 (about a minute on 2 cores)
def test_the_tutorial_job_trains_bit_identically_to_the_recorded_run():
    recorded = json.loads(REFERENCE.read_text())
    got = run_pinned()
    assert len(got["loss"]) == 12  # the tutorial's six lines an epoch
    assert got["loss"] == recorded["loss"]
    assert got["epochs"] == recorded["epochs"]
