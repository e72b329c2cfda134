"""Where `report`, `compare` and `schema` write: only into the run's own directory by default (not
wherever an MLflow tag points), and a bad --out is a message with exit code 2, not a traceback."""

from __future__ import annotations

import pytest
from mlflow.entities import Metric

from orchestrator.cli import main
from orchestrator.track.mlflow_run import client
from orchestrator.track.runs import CHECKPOINT_DIR_TAG


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """A store with one orchestrator run (its record in its directory) that logged two steps."""
    from orchestrator.track.runs import write_run_record

    tmp_path = tmp_path_factory.mktemp("paths")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    out.mkdir()
    mlflow = client(uri)
    run_id = mlflow.create_run(
        mlflow.create_experiment("paths"), tags={CHECKPOINT_DIR_TAG: str(out)}
    ).info.run_id
    write_run_record(out, run_id)
    mlflow.log_batch(run_id, metrics=[Metric("train_loss", 5.0 - s / 10, 1000 + s, s) for s in (5, 10)])
    return uri, run_id, out


def test_report_writes_into_the_runs_own_directory(logged_run, capsys):
    uri, run_id, out = logged_run
    assert main(["report", run_id, "--tracking-uri", uri]) == 0
    assert (out / "training_metrics.json").is_file()


def test_report_refuses_a_directory_the_tag_points_to_that_is_not_the_runs(logged_run, tmp_path, capsys):
    uri, run_id, own = logged_run
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "summary.json").write_text("precious")
    client(uri).set_tag(run_id, CHECKPOINT_DIR_TAG, str(victim))
    try:
        assert main(["report", run_id, "--tracking-uri", uri]) == 2
    finally:
        client(uri).set_tag(run_id, CHECKPOINT_DIR_TAG, str(own))
    err = capsys.readouterr().err
    assert f"names {victim} as its directory, which holds no record of that run" in err
    assert "--out DIR" in err
    assert (victim / "summary.json").read_text() == "precious" and len(list(victim.iterdir())) == 1


@pytest.mark.parametrize("kind", ["a-file", "under-a-file", "proc"])
def test_report_and_compare_with_an_unusable_out(logged_run, tmp_path, capsys, kind):
    uri, run_id, _ = logged_run
    (tmp_path / "a_file").write_text("x")
    out = {"a-file": tmp_path / "a_file", "under-a-file": tmp_path / "a_file" / "sub", "proc": "/proc/1"}[
        kind
    ]
    for argv in (["report", run_id], ["compare", run_id, run_id]):
        assert main([*argv, "--tracking-uri", uri, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"error: --out {out}: ") and "Traceback" not in err, err


def test_schema_out_must_be_a_writable_file(tmp_path, capsys):
    assert main(["schema", "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path}: is a directory" in capsys.readouterr().err
    assert main(["schema", "--out", str(tmp_path / "missing" / "schema.json")]) == 2
    assert "cannot write the file (No such file or directory)" in capsys.readouterr().err
    assert main(["schema", "--out", str(tmp_path / "schema.json")]) == 0
