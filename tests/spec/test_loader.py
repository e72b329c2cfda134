"""Strict YAML loading: every problem named with its line, its path and a hint; exit code 2."""

from __future__ import annotations

import pytest

from orchestrator.spec import SpecError, parse_spec
from tests.conftest import REPO, run_cli


def problems(text: str) -> list:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "spec.yaml")
    return info.value.problems


def test_minimal_spec_takes_documented_defaults():
    spec = parse_spec("name: demo\n")
    assert spec.deepspeed.zero_stage == 2
    assert spec.optimizer.betas == [0.9, 0.999]
    assert spec.data.validation_fraction == 0.2
    assert spec.checkpoint.dir == "./checkpoints"


def test_unknown_key_suggests_the_near_miss_with_its_line():
    (problem,) = problems("name: demo\nschedule:\n  warmup_step: 10\n")
    assert problem.path == "schedule.warmup_step"
    assert problem.line == 3
    assert problem.hint == "did you mean `warmup_steps`?"


def test_unknown_key_without_near_miss_lists_allowed_keys():
    (problem,) = problems("name: demo\ncluster:\n  flavour: big\n")
    assert "num_workers" in problem.hint


def test_string_is_not_coerced_into_a_number():
    (problem,) = problems('name: demo\nmodel:\n  n_layers: "3"\n')
    assert problem.path == "model.n_layers"
    assert problem.line == 3
    assert "str" in problem.message


def test_all_problems_are_reported_at_once():
    found = problems("name: demo\nmodel:\n  d_model: -1\ndeepspeed:\n  zero_stage: 4\ntrain:\n  epoch: 2\n")
    assert {p.path for p in found} == {"model.d_model", "deepspeed.zero_stage", "train.epoch"}
    assert {p.line for p in found} == {3, 5, 7}


def test_duplicate_keys_are_rejected():
    (problem,) = problems("name: demo\nname: other\n")
    assert problem.line == 2
    assert "twice" in problem.message and "line 1" in problem.hint


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("name: !!python/object:os.system demo\n", "tag"),
        ("a: &x [1]\nname: *x\n", "aliases"),
        ("- just\n- a list\n", "mapping"),
        ("name: [unclosed\n", "not valid YAML"),
        ("name: demo\nmodel:\n  dropout: .nan\n", "finite"),
    ],
)
def test_hostile_or_malformed_yaml_is_refused(text, fragment):
    assert any(fragment in p.message for p in problems(text))


def test_cross_field_check_carries_a_hint():
    (problem,) = problems("name: demo\nmodel:\n  d_model: 30\n  n_heads: 4\n")
    assert problem.path == "model.n_heads"
    assert "divisible" in problem.message
    assert problem.hint.startswith("pick n_heads from")


def test_eval_interval_must_land_on_logging_steps():
    (problem,) = problems("name: demo\ntrain:\n  log_interval: 5\n  eval_interval: 12\n")
    assert problem.hint == "eval_interval: 10"


def test_cli_exits_2_without_traceback_and_touches_nothing(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: demo\ndeepspeed:\n  zero_stag: 2\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli("submit", str(spec), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{spec}:3 deepspeed.zero_stag: unknown key" in result.stderr
    assert "did you mean `zero_stage`?" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_cli_names_a_missing_file(tmp_path):
    result = run_cli("validate", "nope.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr and "cannot read" in result.stderr


def test_shipped_quickstart_is_in_the_repo():
    assert (REPO / "configs" / "quickstart.yaml").is_file()


def test_every_cross_field_problem_is_reported_with_the_field_errors():
    """min_lr above lr, fp16 on CPU and a global batch that does not multiply out, beside an unknown
    key in another section: four problems, each at its own line, in the order of the file."""
    found = problems(
        "name: demo\n"
        "deepspeed:\n  zero_stag: 2\n  precision: fp16\n"
        "optimizer: {lr: 0.001}\n"
        "schedule: {min_lr: 0.01}\n"
        "train: {micro_batch_size: 4, global_batch_size: 30}\n"
    )
    assert [(p.path, p.line) for p in found] == [
        ("deepspeed.zero_stag", 3),
        ("schedule.min_lr", 6),
        ("train.global_batch_size", 7),
    ], "deepspeed has a field error, so its own fp16 check waits for the key to be fixed"
    fixed = problems(
        "name: demo\n"
        "deepspeed:\n  zero_stage: 2\n  precision: fp16\n"
        "optimizer: {lr: 0.001}\n"
        "schedule: {min_lr: 0.01}\n"
        "train: {micro_batch_size: 4, global_batch_size: 30}\n"
    )
    assert [(p.path, p.line) for p in fixed] == [
        ("deepspeed.precision", 4),
        ("schedule.min_lr", 6),
        ("train.global_batch_size", 7),
    ]


def test_the_readme_two_problem_example_prints_both(tmp_path):
    readme = (REPO / "README.md").read_text()
    example = readme.split("spec.yaml: 2 problems in the run spec")[1].split("```")[0]
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: demo\ndeepspeed:\n  zero_stag: 2\ncluster:\n  num_workers: 2\ntrain:\n"
        "  global_batch_size: 64\n"
    )
    result = run_cli("validate", "spec.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("spec.yaml: 2 problems in the run spec"), result.stderr
    for line in example.strip().splitlines():
        assert line in result.stderr, (line, result.stderr)
