"""The sweep section in Ray Tune's terms: sampled values become `--set` text the spec reads back
exactly, ranges keep the spec's inclusive bounds, and the search runs at most the allowed trials."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from orchestrator.errors import NotRunnableHere
from orchestrator.spec import parse_spec
from orchestrator.sweep.space import (
    PARAMS_KEY,
    override,
    param_space,
    require_optuna,
    scheduler,
    search_algorithm,
)

SPEC = """\
name: demo
schedule: {warmup_steps: 4, min_lr: 3.0e-4}
train: {max_steps: 20, eval_interval: 10, log_interval: 5}
sweep:
  parameters:
    optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}
    model.n_layers: {randint: [2, 3]}
    optimizer.betas: {choice: [[0.9, 0.95], [0.9, 0.999]]}
    train.nan_policy: {grid: [stop, skip]}
  scheduler: asha
"""


@pytest.mark.parametrize(
    "value, path, expected",
    [
        (4e-05, "optimizer.lr", 4e-05),  # PyYAML reads `4e-05` as a string; the text keeps a dot
        (np.float64(0.00316), "optimizer.lr", 0.00316),  # Tune samples numpy scalars
        (np.int64(3), "model.n_layers", 3),
        ([0.9, 0.95], "optimizer.betas", [0.9, 0.95]),
        ("skip", "train.nan_policy", "skip"),
    ],
)
def test_a_sampled_value_reads_back_as_the_same_spec_value(value, path, expected):
    spec = parse_spec("name: demo\n", overrides=[override(path, value)])
    section, field = path.split(".")
    assert getattr(getattr(spec, section), field) == expected


def test_randint_includes_its_high_bound_as_the_spec_says():
    space = param_space(parse_spec(SPEC).sweep)[PARAMS_KEY]
    samples = {space["model.n_layers"].sample() for _ in range(200)}
    assert samples == {2, 3}
    lr = [space["optimizer.lr"].sample() for _ in range(200)]
    assert min(lr) >= 1e-3 and max(lr) <= 1e-2
    assert space["train.nan_policy"] == {"grid_search": ["stop", "skip"]}


def test_asha_stops_on_steps_and_never_at_a_trials_last_step():
    spec = parse_spec(SPEC)
    asha = scheduler(spec.sweep, SimpleNamespace(spec=spec, total_steps=20))
    assert asha._time_attr == "step"
    assert asha._max_t == 21  # ASHA stops every trial reaching max_t, even during its final save
    assert asha._brackets[0]._rungs[-1][0] == 10  # the grace period defaults to the first evaluation
    assert scheduler(parse_spec("name: demo\n").sweep, None) is None


def test_the_search_runs_at_most_the_allowed_trials_at_once():
    from ray.tune.search import ConcurrencyLimiter

    spec = parse_spec(SPEC)
    assert search_algorithm(spec.sweep, 2).max_concurrent == 2
    optuna = parse_spec(
        "name: demo\nsweep: {parameters: {optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}}, search: optuna}"
    )
    limited = search_algorithm(optuna.sweep, 3)
    assert isinstance(limited, ConcurrencyLimiter) and limited.max_concurrent == 3


def test_optuna_missing_is_said_with_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # what an interpreter without optuna does
    with pytest.raises(NotRunnableHere, match="pip install optuna, or use search: random"):
        require_optuna()
