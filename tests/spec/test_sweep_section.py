"""The sweep section: typed like every section, every path checked against the spec's own fields, and
every value a trial may get validated as `--set path=value` would be, all problems at once."""

from __future__ import annotations

import pytest

from orchestrator.spec import SpecError, parse_spec, run_spec_schema

BASE = """\
name: demo
optimizer: {lr: 3.0e-3}
schedule: {warmup_steps: 4, min_lr: 3.0e-4}
train: {max_steps: 20}
sweep:
  parameters:
"""


def sweep(parameters: str, extra: str = "") -> str:
    lines = "".join(f"    {line}\n" for line in parameters.strip().splitlines())
    return BASE + lines + "".join(f"  {line}\n" for line in extra.strip().splitlines())


def problems(text: str) -> list:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "spec.yaml")
    return info.value.problems


def test_a_sweep_section_reads_every_kind_of_space():
    spec = parse_spec(
        sweep(
            """
optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}
optimizer.weight_decay: {uniform: [0.0, 0.2]}
train.micro_batch_size: {choice: [4, 8]}
model.n_layers: {randint: [2, 4]}
optimizer.betas: {grid: [[0.9, 0.95], [0.9, 0.999]]}
""",
            "num_samples: 3\nscheduler: asha\nasha: {grace_period: 5}",
        )
    )
    kinds = {path: space.kind for path, space in spec.sweep.parameters.items()}
    assert kinds == {
        "optimizer.lr": "loguniform",
        "optimizer.weight_decay": "uniform",
        "train.micro_batch_size": "choice",
        "model.n_layers": "randint",
        "optimizer.betas": "grid",
    }
    assert spec.sweep.trial_count == 6  # 3 samples x a grid of 2
    assert spec.sweep.direction == "min" and spec.sweep.enabled


def test_the_direction_follows_the_metric_unless_given():
    natural = parse_spec(sweep("optimizer.lr: {choice: [1.0e-3]}", "metric: val_accuracy"))
    assert natural.sweep.direction == "max"
    given = parse_spec(sweep("optimizer.lr: {choice: [1.0e-3]}", "metric: val_accuracy\nmode: min"))
    assert given.sweep.direction == "min"


def test_the_resolved_spec_loads_again_to_the_same_spec():
    """A run stores its resolved spec; a resume and a sweep trial load it again."""
    asha = "scheduler: asha\nasha: {grace_period: 10}"  # within the trials' 20 steps
    for text in ("name: demo\n", sweep("optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}", asha)):
        spec = parse_spec(text)
        assert parse_spec(spec.resolved_text()) == spec
    assert "loguniform" in parse_spec(sweep("optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}")).resolved_text()


@pytest.mark.parametrize(
    "path, hint",
    [
        ("optimizer.learning_rate", "did you mean `optimizer.lr`?"),
        ("optimzer.lr", "did you mean `optimizer.lr`?"),
        ("train.max_step", "did you mean `train.max_steps`?"),
    ],
)
def test_a_misspelled_path_gets_did_you_mean(path, hint):
    (problem,) = problems(sweep(f"{path}: {{choice: [1]}}"))
    assert problem.path == f"sweep.parameters.{path}"
    assert problem.hint == hint
    assert problem.line == 6  # the parameters key


@pytest.mark.parametrize(
    "path, fragment",
    [
        ("optimizer", "is a section, not a value"),
        ("optimizer.lr.scale", "is a value, not a section"),
        ("tracking.uri", "cannot be searched"),
        ("checkpoint.dir", "cannot be searched"),
        ("sweep.num_samples", "cannot be searched"),
    ],
)
def test_paths_a_trial_cannot_take_are_refused(path, fragment):
    found = problems(sweep(f"{path}: {{choice: [1]}}"))
    assert any(p.path == f"sweep.parameters.{path}" and fragment in p.message for p in found), found


def test_a_key_inside_a_dict_field_may_be_searched():
    spec = parse_spec(sweep("deepspeed.raw_config.steps_per_print: {choice: [10, 100]}"))
    assert "deepspeed.raw_config.steps_per_print" in spec.sweep.parameters


def test_a_misspelled_search_space_gets_did_you_mean_with_its_line():
    (problem,) = problems(sweep("optimizer.lr: {chioce: [1.0e-3]}"))
    assert problem.path == "sweep.parameters.optimizer.lr" and problem.line == 7
    assert "did you mean `choice`?" in problem.message


@pytest.mark.parametrize(
    "space, fragment",
    [
        ("{choice: [1.0e-3], grid: [1.0e-3]}", "exactly one of"),
        ("{}", "exactly one of"),
        ("{loguniform: [0.0, 1.0e-2]}", "must be above 0"),
        ("{uniform: [1.0e-2, 1.0e-3]}", "must be below high"),
        ("{choice: []}", "at least 1 item"),
    ],
)
def test_a_search_space_must_be_well_formed(space, fragment):
    (problem,) = problems(sweep(f"optimizer.lr: {space}"))
    assert fragment in problem.message


def test_a_value_outside_the_fields_bounds_is_refused_before_anything_runs():
    (problem,) = problems(sweep("optimizer.lr: {choice: [1.0e-3, 20.0]}"))
    assert problem.path == "sweep.parameters.optimizer.lr"
    assert "choice value 20.0 is refused" in problem.message
    assert "less than or equal to 10" in problem.message


def test_a_bound_that_breaks_a_cross_field_check_is_refused_with_its_hint():
    (problem,) = problems(sweep("optimizer.lr: {loguniform: [1.0e-5, 1.0e-2]}"))
    assert "low bound 1e-05 is refused" in problem.message and "min_lr" in problem.message
    assert problem.hint == "set min_lr to about lr/10"


def test_a_float_range_over_a_whole_number_field_points_at_randint():
    low, high, middle = problems(sweep("model.n_layers: {uniform: [1.0, 4.0]}"))  # each refused value
    assert "low bound 1.0" in low.message and "high bound 4.0" in high.message
    assert "value 2.5" in middle.message  # and one between them
    assert all("valid integer" in p.message and "randint" in p.hint for p in (low, high, middle))


def test_every_problem_is_reported_once_and_at_once():
    found = problems(
        "name: demo\ntrain: {max_steps: 20}\nsweep:\n  parameters:\n"  # warmup 20 >= max_steps 20
        "    optimizer.learning_rate: {choice: [1]}\n"
        "    model.n_heads: {grid: [3, 4]}\n"
        "    optimizer.lr: {choice: [20.0]}\n"
    )
    paths = sorted(p.path for p in found)
    assert paths == [
        "schedule.warmup_steps",  # the spec's own problem, not repeated for every value
        "sweep.parameters.model.n_heads",
        "sweep.parameters.optimizer.learning_rate",
        "sweep.parameters.optimizer.lr",
    ]


@pytest.mark.parametrize(
    "parameters, extra, path, fragment",
    [
        ("optimizer.lr: {choice: [1.0e-3]}", "search: grid", "parameters.optimizer.lr", "grid values only"),
        ("optimizer.lr: {grid: [1.0e-3]}", "search: optuna", "parameters.optimizer.lr", "takes no grid"),
        ("optimizer.betas: {choice: [[0.9, 0.95]]}", "search: optuna", "parameters.optimizer.betas", "lists"),
        ("optimizer.lr: {choice: [1.0e-3]}", "asha: {grace_period: 5}", "scheduler", "scheduler is none"),
        ("optimizer.lr: {grid: [1.0e-3, 2.0e-3]}", "num_samples: 6000", "num_samples", "12000 trials"),
    ],
)
def test_the_search_fits_its_spaces(parameters, extra, path, fragment):
    (problem,) = problems(sweep(parameters, extra))
    assert problem.path == f"sweep.{path}" and fragment in problem.message


def test_the_schema_describes_the_sweep_section():
    schema = run_spec_schema()
    assert "sweep" in schema["properties"]
    space = schema["$defs"]["SearchSpace"]
    assert space["minProperties"] == space["maxProperties"] == 1
    assert set(space["properties"]) == {"choice", "grid", "uniform", "loguniform", "randint"}
