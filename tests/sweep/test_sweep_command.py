"""`orchestrator sweep` refuses what cannot run before it starts anything: no Ray, no run, no files."""

from __future__ import annotations

import subprocess
import sys

from orchestrator.cli import main
from tests.conftest import REPO, TINY_SPEC

TYPO_SWEEP = (
    TINY_SPEC + "sweep:\n  parameters:\n    optimizer.learning_rate: {loguniform: [1.0e-3, 1.0e-2]}\n"
)
PROBE = """
import sys
from orchestrator.cli import main
code = main(["sweep", "spec.yaml"])
print("exit", code, "ray imported:", "ray" in sys.modules)
"""


def test_a_misspelled_parameter_path_exits_2_with_did_you_mean_before_ray_starts(tmp_path):
    (tmp_path / "spec.yaml").write_text(TYPO_SWEEP)
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.stdout.strip() == "exit 2 ray imported: False", result.stderr
    assert (
        "spec.yaml:10 sweep.parameters.optimizer.learning_rate: `learning_rate` is not a field"
        in result.stderr
    )
    assert "hint: did you mean `optimizer.lr`?" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # no run, no store, no directory


def test_a_spec_without_a_sweep_section_says_what_to_add(write_spec, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(write_spec(TINY_SPEC))]) == 2
    assert "no sweep.parameters" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


def test_backends_other_than_ray_local_are_refused_with_the_way_to_run_it(
    write_spec, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    spec = TINY_SPEC + "sweep: {parameters: {optimizer.lr: {choice: [1.0e-3]}}}\n"
    code = main(["sweep", str(write_spec(spec)), "--set", "cluster.backend=kubernetes"])
    assert code == 2
    assert "sweeps run on backend ray-local" in capsys.readouterr().err


def test_the_arguments_must_name_one_sweep(write_spec, capsys):
    assert main(["sweep"]) == 2
    assert main(["sweep", "--resume", "x", "--set", "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "give a spec to start a sweep, or --resume RUN" in err and "--set cannot change it" in err


def test_resume_refuses_a_run_that_is_not_a_sweep(sqlite_run, capsys):
    uri, run_id, _ = sqlite_run
    assert main(["sweep", "--resume", run_id, "--tracking-uri", uri]) == 2
    assert "is not a sweep's parent run" in capsys.readouterr().err


def test_what_the_sweep_hands_ray_tune_holds_no_resolved_secret(tmp_path, monkeypatch):
    """Every trial gets the sweep's context through Ray (its object store, which spills to disk under
    memory pressure, and Tune's experiment state on resume): the tracking URI travels with its
    `${env:...}` reference, and each trial resolves it in its own environment, as a cluster's driver
    resolves a ticket."""
    import pickle

    from orchestrator.lifecycle import plan_run
    from orchestrator.spec import parse_spec, resolve_references
    from orchestrator.sweep.driver import _context

    canary = "tune-canary-7d1e9a"
    monkeypatch.setenv("SWEEP_TRACKING_PASSWORD", canary)
    monkeypatch.chdir(tmp_path)
    spec = parse_spec(
        TINY_SPEC
        + "tracking: {uri: 'http://me:${env:SWEEP_TRACKING_PASSWORD}@127.0.0.1:5000'}\n"
        + "sweep: {parameters: {optimizer.lr: {choice: [1.0e-3, 2.0e-3]}}}\n"
    )
    plan = plan_run(spec, tmp_path)
    assert canary in plan.tracking_uri  # the driver itself uses the resolved store
    context = _context(plan, tmp_path)
    assert canary.encode() not in pickle.dumps(context), "a resolved secret in what Tune is handed"
    assert resolve_references(context.tracking_uri) == plan.tracking_uri  # what a trial tracks to
