"""The live table: what a user sees while a sweep runs, on a terminal (redrawn in place) and in a log
(one line per trial that changed)."""

from __future__ import annotations

import io

from orchestrator.progress import SweepTablePrinter
from orchestrator.sweep.table import ENDED, FAILED, RUNNING, SweepTable


def test_rows_show_trial_parameters_step_metric_and_state():
    table = SweepTable("val_loss", total_steps=20)
    table.update("ab12c_00000", params={"optimizer.lr": 0.00316}, state=RUNNING, step=15, value=5.12344)
    table.update("ab12c_00001", params={"optimizer.lr": 5.0}, state=FAILED, error="NonFiniteLossError: NaN")
    header, first, second = table.render().splitlines()
    assert header.split() == ["trial", "parameters", "step", "val_loss", "state"]
    assert first.split() == ["00000", "optimizer.lr=0.00316", "15/20", "5.1234", "RUNNING"]
    assert second.split()[:4] == ["00001", "optimizer.lr=5", "-", "-"]
    assert second.endswith("FAILED: NonFiniteLossError: NaN")


def test_only_real_changes_reach_the_printer_and_unfinished_trials_are_known():
    seen = []
    table = SweepTable("val_loss", 20, on_change=lambda t, rows: seen.extend(r.state for r in rows))
    table.update("t_00000", params={"x": 1}, state=RUNNING)
    table.update("t_00000", params={"x": 1}, state=RUNNING)  # nothing new
    table.update("t_00001", params={"x": 2}, state=RUNNING)
    table.update("t_00001", state=ENDED, completed=True)
    assert seen == [RUNNING, RUNNING, ENDED]
    assert [row.trial_id for row in table.unfinished] == ["t_00000"]


def test_a_log_gets_one_line_per_change_and_a_terminal_a_table_redrawn_in_place():
    lines, live = io.StringIO(), io.StringIO()
    for printer in (SweepTablePrinter(lines, "lines"), SweepTablePrinter(live, "live")):
        table = SweepTable("val_loss", 20, on_change=printer)
        table.update("t_00000", params={"optimizer.lr": 0.001}, state=RUNNING)
        table.update("t_00000", step=5, value=5.5)
    assert lines.getvalue().splitlines() == [
        "[sweep] 00000  optimizer.lr=0.001  -  -  RUNNING",
        "[sweep] 00000  optimizer.lr=0.001  5/20  5.5000  RUNNING",
    ]
    first, second = live.getvalue().split("\x1b[2F\x1b[J")  # up over the 2 drawn lines, clear
    assert first.splitlines()[1].split()[2] == "-" and second.splitlines()[1].split()[2] == "5/20"
