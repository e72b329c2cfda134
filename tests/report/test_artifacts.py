"""History -> training_metrics.json and the two plots."""

from __future__ import annotations

import json

from PIL import Image

from orchestrator.report.artifacts import (
    CURVE_PNG,
    EPOCH_PNG,
    METRICS_JSON,
    loss_by_epoch,
    training_metrics,
    write_report,
)
from orchestrator.report.summary import SUMMARY_JSON


def history():
    steps = [5, 10, 15, 20, 25, 30]
    return {
        "train_loss": {s: 6.0 - 0.1 * s for s in steps},
        "val_loss": {10: 5.1, 20: 4.2, 30: 3.3},
        "learning_rate": {s: 1e-3 * s / 30 for s in steps},
        "epoch": {5: 1.0, 10: 1.0, 15: 1.0, 20: 2.0, 25: 2.0, 30: 2.0},
    }


def test_json_has_exactly_the_documented_parallel_lists():
    doc = training_metrics(history())
    assert list(doc) == ["train_loss", "val_loss", "learning_rate", "epochs", "steps"]
    assert {len(v) for v in doc.values()} == {6}
    assert doc["steps"] == [5, 10, 15, 20, 25, 30]
    assert doc["val_loss"] == [None, 5.1, None, 4.2, None, 3.3]
    assert doc["epochs"] == [1, 1, 1, 2, 2, 2]


def test_steps_come_out_sorted_whatever_the_insertion_order():
    h = history()
    h["train_loss"] = dict(reversed(list(h["train_loss"].items())))
    assert training_metrics(h)["steps"] == [5, 10, 15, 20, 25, 30]


def test_loss_by_epoch_averages_each_epoch():
    means = loss_by_epoch(training_metrics(history()))
    assert means == {1: (5.5 + 5.0 + 4.5) / 3, 2: (4.0 + 3.5 + 3.0) / 3}


def test_written_report_is_readable_json_and_real_images(tmp_path):
    paths = write_report(history(), tmp_path / "out")
    assert [p.name for p in paths] == [METRICS_JSON, SUMMARY_JSON, CURVE_PNG, EPOCH_PNG]
    assert json.loads(paths[0].read_text()) == training_metrics(history())
    assert json.loads(paths[1].read_text())["total_steps"] == 30
    for png in paths[2:]:
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            width, height = image.size
        assert width >= 600 and height >= 300
        assert png.stat().st_size > 10_000
    assert oct(paths[0].stat().st_mode & 0o777) == "0o644"


def test_curve_draws_loss_blue_and_red_and_lr_green_on_a_log_axis(tmp_path):
    write_report(history(), tmp_path)
    with Image.open(tmp_path / CURVE_PNG) as image:
        pixels = {color for _, color in image.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert (0, 0, 255) in pixels  # training loss
    assert (255, 0, 0) in pixels  # validation loss
    assert (0, 128, 0) in pixels  # learning rate


def test_long_lines_are_drawn_from_their_envelope_keeping_extremes_and_gaps():
    import math

    from orchestrator.report.artifacts import envelope

    steps = list(range(1, 100_001))
    loss = [5.0 - s / 50_000 + (0.001 if s % 2 else 0.0) for s in steps]
    loss[12_345], loss[77_777], loss[50_000] = 9.0, -1.0, math.nan
    xs, ys = envelope(steps, loss, limit=4000)
    assert len(xs) <= 4100 and xs == sorted(xs)
    assert (xs[0], xs[-1]) == (1, 100_000)
    picked = dict(zip(xs, ys, strict=True))
    assert picked[12_346] == 9.0 and picked[77_778] == -1.0 and math.isnan(picked[50_001])
    short = list(range(10))
    assert envelope(short, short) == (short, short)
