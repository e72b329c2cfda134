"""Tiny runs trained for real (DeepSpeed on 2 CPU ranks under torchrun, see tests/train/harness.py),
one per ZeRO stage, trained on first use and shared by every export test of the session."""

from __future__ import annotations

import pytest

from orchestrator.track.mlflow_run import client
from tests.train.harness import engine_spec, make_plan, output, run_engine


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """trained_run(stage) -> the Plan of a finished 20-step run at that ZeRO stage."""
    work = tmp_path_factory.mktemp("export-runs")
    plans: dict[int, object] = {}

    def train(stage: int):
        if stage not in plans:
            uri = f"sqlite:///{work / 'mlflow.db'}"
            if client(uri).get_experiment_by_name("engine") is None:  # artifacts stay in `work`
                client(uri).create_experiment("engine", artifact_location=str(work / "artifacts"))
            spec = engine_spec(stage=stage, steps=20, eval_interval=10, interval=10)
            plan = make_plan(work, spec, f"stage{stage}")
            result = run_engine(plan)
            assert result.returncode == 0, output(result)
            plans[stage] = plan
        return plans[stage]

    return train
