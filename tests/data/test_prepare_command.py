"""`orchestrator prepare` on a corpus of many pieces: Ray tasks on an embedded Ray (127.0.0.1, token
authentication), the same dataset as one process makes, found again by `validate` and `prepare`."""

from __future__ import annotations

import json
import re

import pytest

from orchestrator.data.prepare import InProcess, dataset_uri, prepare, read_manifest
from orchestrator.spec import load_spec
from orchestrator.storage.store import open_store
from tests.conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SPEC = """\
name: many-pieces
model: {vocab_size: 320, context_length: 32}
data: {corpus: files, files: ['corpus/*'], shard_mb: 0.1, prepared: prepared}
"""


def test_prepare_runs_its_pieces_as_ray_tasks_and_makes_what_one_process_makes(tmp_path):
    (tmp_path / "corpus").mkdir()
    for index in range(3):
        text = "\n\n".join(
            f"File {index}, paragraph {i}: the quick brown fox jumps over it. " * 4 for i in range(600)
        )
        (tmp_path / "corpus" / f"part-{index}.txt").write_text(text)
    records = [json.dumps({"text": f"record {i} " * 30}) for i in range(500)]
    (tmp_path / "corpus" / "more.jsonl").write_text("\n".join(records) + "\n")
    (tmp_path / "spec.yaml").write_text(SPEC)
    result = run_cli("prepare", "spec.yaml", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    pieces = int(re.search(r"in (\d+) piece\(s\)", result.stdout).group(1))
    assert pieces > 4, result.stdout
    assert re.search(r"\[prepare\] \d+/\d+ pieces, .* MB/s, .*M tokens/s", result.stdout), result.stdout
    assert "prepared   " in result.stdout and "training and" in result.stdout
    spec = load_spec(tmp_path / "spec.yaml")
    by_ray = read_manifest(open_store(dataset_uri(spec, tmp_path)))
    assert len(by_ray.shards) == 2 * pieces and by_ray.totals["documents"] == 3 * 600 + 500
    alone = load_spec(tmp_path / "spec.yaml", ["data.prepared=alone"])
    in_process = prepare(alone, tmp_path, runner=InProcess(), say=lambda _: None)
    assert [s.sha256 for s in in_process.shards] == [s.sha256 for s in by_ray.shards], "the same shards"
    again = run_cli("prepare", "spec.yaml", cwd=tmp_path)
    assert again.returncode == 0 and "[prepare]" not in again.stdout, "prepared once, then found"
    validated = run_cli("validate", "spec.yaml", cwd=tmp_path)
    assert (
        f"{by_ray.totals['tokens']:,} tokens in {by_ray.totals['documents']:,} documents" in validated.stdout
    )


def test_ctrl_c_during_prepare_exits_130_and_the_next_prepare_finishes_the_rest(tmp_path):
    """Ctrl-C while the Ray tasks tokenize: exit code 130 and a word, no traceback, no manifest (so
    nothing half-made is used); the next `prepare` finishes the dataset."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO, wait_for

    (tmp_path / "corpus").mkdir()
    for index in range(8):
        text = "\n\n".join(
            f"Part {index}, paragraph {i}: the quick brown fox jumps. " * 8 for i in range(3000)
        )
        (tmp_path / "corpus" / f"part-{index}.txt").write_text(text)
    (tmp_path / "spec.yaml").write_text(SPEC)
    log = tmp_path / "prepare.log"
    command = [sys.executable, "-m", "orchestrator", "prepare", "spec.yaml"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )  # fmt: skip
    try:
        # The first piece's shards exist: the tasks run (about 100 pieces, a few seconds, are left).
        # Not earlier: a Ctrl-C while Ray starts is acted on only once ray.init returns.
        shards = lambda: any((tmp_path / "prepared").glob("*/builds/*/train-*.bin"))  # noqa: E731
        wait_for(lambda: shards() or process.poll() is not None, 300, "the first piece's shards", 0.05)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        returncode = process.wait(120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    output = log.read_text()
    assert returncode == 130 and "interrupted" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    spec = load_spec(tmp_path / "spec.yaml")
    store = open_store(dataset_uri(spec, tmp_path))
    assert not store.exists("manifest.json"), "an interrupted prepare leaves no manifest"
    again = run_cli("prepare", "spec.yaml", cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert read_manifest(store).totals["documents"] == 8 * 3000
