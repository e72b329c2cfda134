"""Inputs that used to end in a Python traceback end in a message and an exit code (2 for wrong input,
1 for what failed or was not found, 130 for an interrupt): edited run files, out-of-range options,
text that is not UTF-8, an output that cannot hold non-ASCII, places that cannot be written."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from orchestrator.cli import main
from orchestrator.errors import EXIT_INTERRUPTED
from tests.conftest import REPO, TINY_SPEC, run_main

# --- hand-edited checkpoint markers --------------------------------------------------------------

MARKERS = {
    "step-as-string": {"step": "5", "world_size": 2, "zero_stage": 2},
    "world-size-as-string": {"step": 5, "world_size": "2", "zero_stage": 2},
    "stage-as-float": {"step": 5, "world_size": 2, "zero_stage": 2.5},
    "metric-as-string": {"step": 5, "world_size": 2, "zero_stage": 2, "metric_value": "low"},
    "step-null": {"step": None, "world_size": 2, "zero_stage": 2},
    "step-true": {"step": True, "world_size": 2, "zero_stage": 2},
    "a-list": [5, 2, 2],
    "missing-fields": {"step": 5},
    "unknown-field": {"step": 5, "world_size": 2, "zero_stage": 2, "owner": "me"},
}


@pytest.fixture(scope="module")
def started_run(tmp_path_factory):
    """A run as `submit` starts it (its directory, its MLflow run storing spec.yaml), not trained:
    (work directory, run name, run directory, run id)."""
    from orchestrator.lifecycle import plan_run, start_run
    from orchestrator.spec import parse_spec

    work = tmp_path_factory.mktemp("edited-run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        plan = start_run(plan_run(parse_spec(TINY_SPEC)), work)
    from orchestrator.track.mlflow_run import client

    for key, value in {"train_loss": 5.0, "learning_rate": 1e-3, "epoch": 1.0}.items():
        client(plan.tracking_uri).log_metric(plan.run_id, key, value, step=5)
    return work, plan.run_name, plan.checkpoint_dir, plan.run_id


COMMANDS_READING_CHECKPOINTS = {
    "generate": ["generate", "RUN", "--prompt", "x"],
    "export": ["export", "RUN", "--format", "safetensors", "--out", "exported"],
    "resume": ["submit", "--resume", "RUN"],
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("marker", MARKERS)
@pytest.mark.parametrize("command", COMMANDS_READING_CHECKPOINTS)
def test_a_hand_edited_checkpoint_marker_is_a_message(started_run, capsys, monkeypatch, marker, command):
    from orchestrator.train.checkpoint import complete_checkpoints

    work, run_name, run_dir, _ = started_run
    step = f"{run_dir}/step-5"
    subprocess.run(["mkdir", "-p", step], check=True)
    with open(f"{step}/COMPLETE.json", "w") as handle:
        json.dump(MARKERS[marker], handle)
    monkeypatch.chdir(work)
    assert complete_checkpoints(run_dir) == []
    argv = [run_name if part == "RUN" else part for part in COMMANDS_READING_CHECKPOINTS[command]]
    code, output = run_main(argv, capsys)
    assert code in (1, 2) and "checkpoint" in output, output


# --- interrupts and options ------------------------------------------------------------------------


def test_ctrl_c_during_generate_exits_130_with_a_message(capsys, monkeypatch, tmp_path):
    import orchestrator.generate as generate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "load_from_directory", lambda path: object())
    monkeypatch.setattr(generate, "write_generation", interrupted)
    code, output = run_main(["generate", "--from-hf", str(tmp_path), "--prompt", "x"], capsys)
    assert code == EXIT_INTERRUPTED and "interrupted" in output, output


BAD_OPTIONS = {
    "seed-beyond-64-bits": (["generate", "--from-hf", ".", "--prompt", "x", "--seed", str(2**64)], "--seed"),
    "seed-negative": (["generate", "--from-hf", ".", "--prompt", "x", "--seed", "-1"], "--seed"),
    "prompt-not-utf8": (
        ["generate", "--from-hf", ".", "--prompt", b"caf\xe9".decode(errors="surrogateescape")],
        "--prompt",
    ),
    "watch-interval-negative": (["report", "RUN", "--watch", "--interval", "-1"], "--interval"),
    "watch-interval-zero": (["report", "RUN", "--watch", "--interval", "0"], "--interval"),
    "watch-interval-nan": (["report", "RUN", "--watch", "--interval", "nan"], "--interval"),
    "list-address-not-a-url": (["list", "--address", "not a url"], "--address"),
    "list-address-no-host": (["list", "--address", "http://"], "--address"),
    "list-address-other-scheme": (["list", "--address", "ftp://127.0.0.1:8265"], "--address"),
    "list-address-bad-port": (["list", "--address", "http://127.0.0.1:99999"], "--address"),
}


@pytest.mark.parametrize("case", BAD_OPTIONS)
def test_an_option_out_of_range_is_a_usage_error(capsys, case):
    argv, option = BAD_OPTIONS[case]
    code, output = run_main(argv, capsys)
    assert code == 2 and option in output, output


# --- places that cannot be written -------------------------------------------------------------

UNWRITABLE = "/proc/orchestrator-cannot-write-here"


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "RUN", "--format", "hf", "--out", UNWRITABLE],
        ["report", "RUN", "--out", UNWRITABLE],
        ["compare", "RUN", "RUN", "--out", UNWRITABLE],
    ],
    ids=["export", "report", "compare"],
)
def test_an_output_directory_that_cannot_be_written_is_a_message(started_run, capsys, monkeypatch, argv):
    work, _, _, run_id = started_run
    monkeypatch.chdir(work)
    code, output = run_main([run_id if part == "RUN" else part for part in argv], capsys)
    assert code in (1, 2) and f"--out {UNWRITABLE}: cannot create the directory" in output, output


# --- specs that validate must run ------------------------------------------------------------------


@pytest.mark.parametrize("host", ["::1", "fe80::1", "::"])
def test_an_ipv6_host_is_refused_by_validate(tmp_path, capsys, host):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: x\ncluster:\n  host: '{host}'\n  expose: true\n")
    code, output = run_main(["validate", str(spec)], capsys)
    assert code == 2 and "s.yaml:3 cluster.host" in output and "IPv4" in output, output


def test_a_sweep_whose_grace_period_outlasts_its_trials_is_refused_by_validate(capsys):
    argv = ["validate", str(REPO / "configs" / "sweep-lr.yaml"), "--set", "train.max_steps=20"]
    code, output = run_main(argv, capsys)
    assert code == 2 and "sweep.asha.grace_period" in output and "20" in output, output


# --- output that cannot hold every character -----------------------------------------------------


def test_every_command_writes_to_an_ascii_terminal(tmp_path, capsys, monkeypatch):
    """What a command prints goes through one stream: characters the terminal's encoding lacks are
    written as escapes, never a UnicodeEncodeError."""
    spec = tmp_path / "s.yaml"
    spec.write_text("name: wide\ntracking: {experiment: 'expérience 🏃'}\n")
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(spec)]) == 0
    out.flush()
    assert "exp\\xe9rience \\U0001f3c3" in out.buffer.getvalue().decode("ascii")


def test_an_ascii_terminal_in_a_real_process(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: wide\ntracking: {experiment: 'expérience'}\ntrain: {epochs: nope}\n")
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", str(spec)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={"PYTHONIOENCODING": "ascii", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "train.epochs" in result.stderr


# --- an edited journal ------------------------------------------------------------------------------


def test_sync_skips_a_damaged_journal_line_and_says_so(sqlite_run, capsys):
    from orchestrator.track.journal import MetricJournal, MetricPoint, journal_path
    from orchestrator.track.runs import FINAL_STATUS_FILE

    uri, run_id, out = sqlite_run
    journal = MetricJournal(journal_path(out))
    journal.append([MetricPoint("train_loss", 2.0, 1, 1000), MetricPoint("train_loss", 1.5, 2, 2000)])
    journal.close()
    lines = journal_path(out).read_text().splitlines(keepends=True)
    for garbage in ('{"key": "train_loss", "value": "x"\n', "\udcff\n", "[]\n", '{"key": 1}\n'):
        lines.insert(1, garbage)
    journal_path(out).write_text("".join(lines), errors="surrogateescape")
    (out / FINAL_STATUS_FILE).write_text(json.dumps({"run_id": run_id, "status": "FINISHED"}))
    code, output = run_main(["sync", run_id, "--tracking-uri", uri], capsys)
    assert code == 0 and "2 sent" in output and "4 damaged lines skipped" in output, output
