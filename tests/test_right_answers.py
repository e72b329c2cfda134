"""Commands that answered wrongly: a warmup longer than the planned run called valid, a sweep range
checked only at its bounds, runs not found by the name the help promises, generation going on past
<|endoftext|>."""

from __future__ import annotations

import pytest

from orchestrator.cli import main
from tests.conftest import REPO, run_main


def test_a_warmup_longer_than_the_planned_run_is_refused(capsys):
    """quickstart plans its steps from its epochs (no train.max_steps for the spec's own check)."""
    from orchestrator.lifecycle import plan_run
    from orchestrator.spec import load_spec

    quickstart = str(REPO / "configs" / "quickstart.yaml")
    steps = plan_run(load_spec(quickstart)).total_steps  # prepared or estimated, as validate sees it
    code, output = run_main(["validate", quickstart, "--set", "schedule.warmup_steps=100000"], capsys)
    assert code == 2 and "schedule.warmup_steps" in output and f"makes {steps} steps" in output, output


def test_every_value_of_a_finite_sweep_range_is_checked(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: x\nmodel: {d_model: 128}\ntrain: {max_steps: 40}\n"
        "sweep:\n  parameters:\n    model.n_heads: {randint: [1, 8]}\n"
    )
    code, output = run_main(["validate", str(spec)], capsys)
    assert code == 2 and "sweep.parameters.model.n_heads" in output and " 3 " in output, output


@pytest.fixture
def named_run(sqlite_run):
    from orchestrator.track.mlflow_run import client

    uri, run_id, out = sqlite_run
    mlflow = client(uri)
    mlflow.set_tag(run_id, "mlflow.runName", "named-run")
    for key, value in {"train_loss": 5.0, "learning_rate": 1e-3, "epoch": 1.0}.items():
        mlflow.log_metric(run_id, key, value, step=5)
    return uri, run_id, out


@pytest.mark.parametrize("command", [["report", "RUN"], ["sync", "RUN"], ["compare", "RUN", "RUN"]])
def test_commands_whose_help_says_run_name_find_runs_by_name(named_run, tmp_path, capsys, command):
    uri = named_run[0]
    argv = ["named-run" if part == "RUN" else part for part in command]
    if command[0] == "compare":
        argv += ["--out", str(tmp_path / "cmp")]
    code, output = run_main([*argv, "--tracking-uri", uri], capsys)
    assert code == 0, output


def test_generate_stops_at_end_of_text_by_default_and_a_flag_goes_on(monkeypatch, capsys, tmp_path):
    import orchestrator.generate as generate

    seen = []
    monkeypatch.setattr(generate, "load_from_directory", lambda path: object())
    monkeypatch.setattr(
        generate, "write_generation", lambda out, loaded, prompts, sampling, **kw: seen.append(sampling)
    )
    assert main(["generate", "--from-hf", str(tmp_path), "--prompt", "x"]) == 0
    assert main(["generate", "--from-hf", str(tmp_path), "--prompt", "x", "--past-end-of-text"]) == 0
    assert [s.stop_at_end_of_text for s in seen] == [True, False]


SWEEP_BASE = "name: x\nmodel: {d_model: 128}\ntrain: {max_steps: 4000, log_interval: 10, eval_interval: 10}\n"


@pytest.mark.parametrize(
    "space, refused",
    [
        ("randint: [10, 1000]", "11"),  # 991 values: more than were checked one by one before
        ("randint: [10, 100000000]", "11"),  # too many to check all: the values near each bound are
        ("randint: [100000000, 100000010]", "100000001"),  # a small range far from zero: every value
    ],
)
def test_an_integer_range_is_checked_value_by_value(tmp_path, capsys, space, refused):
    """eval_interval must be a multiple of log_interval: both bounds are, the values between mostly
    are not."""
    spec = tmp_path / "s.yaml"
    spec.write_text(SWEEP_BASE + f"sweep:\n  parameters:\n    train.eval_interval: {{{space}}}\n")
    code, output = run_main(["validate", str(spec)], capsys)
    assert code == 2 and "sweep.parameters.train.eval_interval" in output, output
    assert f"randint value {refused} is refused" in output, output


@pytest.mark.parametrize(
    "space, checked, unchecked",
    [
        ("train.seed: {randint: [0, 100000000]}", "every value from 0 to 2,047 and from 99,997,953",
         "the 99,995,905 values from 2,048 to 99,997,952"),
        ("train.seed: {randint: [0, 4095]}", "all 4,096 values", None),
        ("optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}", "both bounds and 0.001",
         "values strictly between the bounds"),
        ("model.dropout: {uniform: [0.0, 0.5]}", "both bounds and 0.25",
         "values strictly between the bounds"),
    ],
)  # fmt: skip
def test_validate_says_what_of_a_range_it_checked_and_what_it_did_not(
    tmp_path, capsys, space, checked, unchecked
):
    spec = tmp_path / "s.yaml"
    spec.write_text(SWEEP_BASE + f"sweep:\n  parameters:\n    {space}\n")
    code, output = run_main(["validate", str(spec)], capsys)
    (line,) = [line for line in output.splitlines() if line.startswith("parameter ")]
    assert code == 0 and f"checked: {checked}" in line, output
    assert (unchecked is None and "not checked" not in line) or f"not checked: {unchecked}" in line, line
