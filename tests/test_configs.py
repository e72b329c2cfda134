"""Every shipped spec loads, validates and plans."""

from __future__ import annotations

import pytest

from orchestrator.cli import main
from orchestrator.lifecycle import plan_run
from orchestrator.plan import NotRunnableHere
from orchestrator.spec import load_spec
from tests.conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_configs_exist():
    assert CONFIGS, "configs/ holds no spec"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_spec_validates(path, capsys):
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: valid" in out and "memory " in out


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_spec_plans_or_says_what_this_machine_lacks(path, tmp_path):
    spec = load_spec(path)
    try:
        plan = plan_run(spec, tmp_path)
    except NotRunnableHere as exc:
        assert spec.cluster.gpus_per_worker > 0 or spec.data.corpus == "files" or spec.cluster.address
        assert "hint: " in str(exc)
        return
    assert plan.total_steps >= 1
    assert plan.global_batch_size == (
        spec.train.micro_batch_size * spec.train.gradient_accumulation_steps * spec.cluster.num_workers
    )
    assert plan.checkpoint_dir.startswith(str(tmp_path))


def test_configs_cover_cpu_gpu_zero3_offload_and_multi_node():
    specs = {path.name: load_spec(path) for path in CONFIGS}
    assert any(s.cluster.gpus_per_worker == 0 for s in specs.values())
    assert any(
        s.deepspeed.zero_stage == 2 and s.deepspeed.precision == "bf16" and s.cluster.gpus_per_worker > 0
        for s in specs.values()
    )
    assert any(s.deepspeed.zero_stage == 3 and s.deepspeed.offload_optimizer == "cpu" for s in specs.values())
    multi_node = [s for s in specs.values() if s.cluster.address and s.cluster.num_workers >= 16]
    assert multi_node and multi_node[0].cluster.placement_strategy in ("SPREAD", "STRICT_SPREAD")


def test_shipped_schema_is_current():
    """`orchestrator schema --out schema/run-spec.schema.json` regenerates it after a spec change."""
    import json

    from orchestrator.spec import run_spec_schema

    shipped = json.loads((REPO / "schema" / "run-spec.schema.json").read_text())
    assert shipped == run_spec_schema()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_spec_points_editors_at_the_schema(path):
    first = path.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schema/run-spec.schema.json"


def test_schema_describes_every_section():
    from orchestrator.spec import RunSpec, run_spec_schema

    schema = run_spec_schema()
    assert set(schema["properties"]) == set(RunSpec.model_fields)
    assert schema["additionalProperties"] is False
