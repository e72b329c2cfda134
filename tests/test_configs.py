"""Every shipped spec loads, validates and plans."""

from __future__ import annotations

import pytest

from orchestrator.plan import build_plan
from orchestrator.spec import load_spec
from tests.conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_configs_exist():
    assert CONFIGS, "configs/ holds no spec"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_spec_validates_and_plans(path, tmp_path):
    spec = load_spec(path)
    plan = build_plan(spec, path.read_text(), cwd=tmp_path)
    assert plan.total_steps >= 1
    assert plan.global_batch_size == (
        spec.train.micro_batch_size * spec.train.gradient_accumulation_steps * spec.cluster.num_workers
    )
    assert plan.checkpoint_dir.startswith(str(tmp_path))
