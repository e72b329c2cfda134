"""The export tests use the tiny runs the engine tests train (tests/train/harness.py: DeepSpeed on 2
CPU ranks under torchrun, one run per ZeRO stage), trained on first use and shared by the session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def trained_run(trained_runs):
    """trained_run(stage) -> the Plan of a finished 20-step run at that ZeRO stage."""
    return lambda stage: trained_runs[f"stage{stage}"]
