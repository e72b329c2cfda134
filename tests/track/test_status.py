"""The live status file's readers: the progress line, worker health, durations (no Ray needed)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time

from orchestrator.progress import ProgressBar
from orchestrator.text import format_duration
from orchestrator.track.status import STATUS_FILE, format_progress, worker_health

STATUS = {
    "step": 15,
    "total_steps": 40,
    "metrics": {"train_loss": 4.51234, "val_loss": 4.6, "tokens_per_second": 12345.6},
    "eta_s": 81.0,
}


def test_progress_line_has_bar_step_loss_throughput_and_eta():
    line = format_progress(STATUS)
    assert line == "[#########...............] 15/40 loss 4.5123 val 4.6000 12,346 tok/s ETA 1m21s"


def test_progress_line_before_a_rate_is_known():
    assert format_progress({"step": 0, "total_steps": 10, "eta_s": None}).endswith("0/10 ETA ?")


def test_durations_read_naturally():
    assert [format_duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]


def test_worker_health_tells_alive_dead_and_silent_apart():
    now = time.time()
    me = {"host": socket.gethostname(), "pid": os.getpid(), "time": now}
    assert worker_health(me, now, stale_after_s=60) == "alive"
    assert worker_health({**me, "time": now - 600}, now, stale_after_s=60) == "silent"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert worker_health({**me, "pid": gone.pid}, now, stale_after_s=60) == "dead"


def test_progress_bar_draws_one_line_per_new_step(tmp_path):
    out = io.StringIO()
    bar = ProgressBar(tmp_path, out, in_place=False)
    bar.draw()  # no status yet: nothing
    (tmp_path / STATUS_FILE).write_text(json.dumps(STATUS))
    bar.draw()
    bar.draw()  # same step: not repeated
    (tmp_path / STATUS_FILE).write_text(json.dumps({**STATUS, "step": 20}))
    bar.draw()
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["15/40", "20/40"]


def test_status_lists_every_rank_from_their_heartbeat_files_without_a_collective(tmp_path):
    from orchestrator.track.events import MetricEvent
    from orchestrator.track.status import RunStatusFile, read_status

    rank0, rank1 = RunStatusFile(tmp_path, 40, rank=0), RunStatusFile(tmp_path, 40, rank=1)
    rank0.write([MetricEvent("train_loss", 4.5, 5)])  # rank 1 has only its start-up beat so far
    assert [(w["rank"], w["step"]) for w in read_status(tmp_path)["workers"]] == [(0, 5), (1, 0)]
    rank1.write([MetricEvent("train_loss", 4.5, 10)])
    rank0.write([MetricEvent("train_loss", 4.4, 10), MetricEvent("epoch", 1.0, 10)])
    status = read_status(tmp_path)
    assert [(w["rank"], w["step"], w["pid"]) for w in status["workers"]] == [
        (0, 10, os.getpid()),
        (1, 10, os.getpid()),
    ]
    assert status["step"] == 10 and status["metrics"]["train_loss"] == 4.4 and status["eta_s"] is not None
