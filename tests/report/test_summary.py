"""Summary figures and diagnostics, on constructed histories with known answers."""

from __future__ import annotations

import json
import math

import pytest

from orchestrator.report.artifacts import training_metrics, write_report
from orchestrator.report.summary import SUMMARY_JSON, FinalValidation, render_summary, summarize

STEPS = list(range(10, 110, 10))  # 10 logging steps


def metrics(train, val=None, lr=None):
    history = {
        "train_loss": dict(zip(STEPS, train, strict=True)),
        "learning_rate": dict(zip(STEPS, lr or [1e-3 * (0.8**i) for i in range(10)], strict=True)),
        "epoch": {s: 1.0 for s in STEPS},
    }
    if val:
        history["val_loss"] = val
    return training_metrics(history)


def codes(m) -> list[str]:
    return [d.code for d in summarize(m).diagnostics]


DECREASING = [5.0, 4.5, 4.1, 3.8, 3.5, 3.3, 3.1, 3.0, 2.9, 2.8]


def test_a_healthy_run_has_exact_figures_and_no_diagnostics():
    lr = [1e-3, 9e-4, 8e-4, 7e-4, 6e-4, 5e-4, 4e-4, 3e-4, 2e-4, 1e-4]
    s = summarize(metrics(DECREASING, {50: 3.6, 100: 2.95}, lr))
    assert (s.total_steps, s.logged_points) == (100, 10)
    assert (s.initial_loss, s.final_loss) == (5.0, 2.8)
    assert s.loss_reduction == pytest.approx(2.2)
    assert s.loss_reduction_pct == pytest.approx(44.0)
    assert (s.initial_lr, s.peak_lr, s.final_lr) == (1e-3, 1e-3, 1e-4)
    assert s.lr_decay_from_peak == pytest.approx(10.0)
    assert s.lr_final_over_initial == pytest.approx(0.1)
    assert (s.best_step, s.best_loss) == (100, 2.8)
    assert (s.best_val_step, s.best_val_loss, s.final_val_loss) == (100, 2.95, 2.95)
    assert s.diagnostics == []


def test_the_summary_prefers_the_final_validation_on_the_whole_split():
    m = metrics(DECREASING, {50: 3.6, 100: 2.95})
    assert (summarize(m).final_val_loss, summarize(m).final_val_scope) == (2.95, "last evaluation")
    s = summarize(m, FinalValidation(3.02))
    assert (s.final_val_loss, s.final_val_scope) == (3.02, "whole validation split")
    assert s.best_val_loss == 2.95, "the periodic evaluations stay what they were"
    assert "final val    loss 3.0200 (whole validation split)" in render_summary(s)


def test_the_live_and_rebuilt_summary_read_the_final_validation_from_the_history(tmp_path):
    history = {
        "train_loss": dict(zip(STEPS, DECREASING, strict=True)),
        "learning_rate": {s: 1e-3 for s in STEPS},
        "val_loss": {100: 2.95},
        "final_val_loss": {100: 3.02},
    }
    write_report(history, tmp_path, formats=("json",))
    doc = json.loads((tmp_path / SUMMARY_JSON).read_text())
    assert (doc["final_val_loss"], doc["final_val_scope"]) == (3.02, "whole validation split")
    sampled = {**history, "final_eval_sequences": {100: 16384.0}, "val_sequences": {100: 2_500_000.0}}
    write_report(sampled, tmp_path, formats=("json",))
    doc = json.loads((tmp_path / SUMMARY_JSON).read_text())
    assert doc["final_val_scope"] == "sample of 16,384 of 2,500,000 validation sequences"
    whole = {**history, "final_eval_sequences": {100: 340.0}, "val_sequences": {100: 340.0}}
    write_report(whole, tmp_path, formats=("json",))
    assert json.loads((tmp_path / SUMMARY_JSON).read_text())["final_val_scope"] == "whole validation split"


def test_a_warmup_does_not_hide_the_decay_from_the_peak():
    warmup_then_cosine = [7.5e-4, 1.5e-3, 3e-3, 2.9e-3, 2.5e-3, 2e-3, 1.4e-3, 9e-4, 5e-4, 3e-4]
    s = summarize(metrics(DECREASING, lr=warmup_then_cosine))
    assert (s.initial_lr, s.peak_lr, s.final_lr) == (7.5e-4, 3e-3, 3e-4)
    assert s.lr_decay_from_peak == pytest.approx(10.0), "the schedule decays 10x from its peak"
    assert s.lr_final_over_initial == pytest.approx(0.4), "final / initial: the documented ratio"
    assert "3.000e-03 -> 3.000e-04 (10x below the peak; final/initial 0.4)" in render_summary(s)


def test_increasing_loss_is_diagnosed_with_a_fix():
    s = summarize(metrics(list(reversed(DECREASING))))
    assert [d.code for d in s.diagnostics] == ["loss_increasing"]
    assert "lower optimizer.lr" in s.diagnostics[0].fix
    assert (s.best_step, s.best_loss) == (10, 2.8)
    assert s.loss_reduction_pct == pytest.approx(-78.57142857)


def test_flat_loss_is_not_decreasing():
    flat = [4.0, 4.01, 3.99, 4.0, 4.0, 3.995, 4.0, 4.0, 4.0, 3.99]
    assert "loss_not_decreasing" in codes(metrics(flat))


def test_oscillating_loss_is_diagnosed_but_noise_on_a_descent_is_not():
    zigzag = [4.0, 3.0, 4.1, 2.9, 4.0, 3.0, 4.1, 2.9, 4.0, 3.2]
    assert "loss_oscillating" in codes(metrics(zigzag))
    noisy_descent = [5.0, 4.6, 4.65, 4.2, 4.25, 3.8, 3.85, 3.4, 3.45, 3.0]
    assert codes(metrics(noisy_descent)) == []


def test_overfitting_when_final_validation_is_more_than_half_a_nat_above_training():
    overfit = codes(metrics(DECREASING, {50: 3.7, 100: 3.31}))
    assert overfit == ["overfitting"]
    assert codes(metrics(DECREASING, {50: 3.7, 100: 3.29})) == []  # gap 0.49: fine


def test_non_finite_loss_is_reported_and_best_ignores_it():
    diverged = [5.0, 4.0, 3.5, math.inf, math.nan, math.nan, 3.4, 3.3, 3.2, 3.1]
    s = summarize(metrics(diverged))
    assert s.diagnostics[0].code == "loss_not_finite"
    assert "step 40" in s.diagnostics[0].message
    assert (s.best_step, s.best_loss) == (100, 3.1)


def test_summary_json_and_printed_summary_carry_the_figures(tmp_path):
    history_metrics = {
        "train_loss": dict(zip(STEPS, [*DECREASING[:-1], math.nan], strict=True)),
        "learning_rate": {s: 1e-3 for s in STEPS},
        "val_loss": {100: math.inf},
    }
    write_report(history_metrics, tmp_path, formats=("json",))
    doc = json.loads((tmp_path / SUMMARY_JSON).read_text())
    assert doc["final_loss"] == "NaN" and doc["final_val_loss"] == "Infinity"
    assert doc["best_loss"] == 2.9 and doc["lr_decay_from_peak"] == 1.0
    assert [d["code"] for d in doc["diagnostics"]] == ["loss_not_finite"]
    assert not (tmp_path / "training_curve.png").exists()  # formats: json only
    text = render_summary(summarize(training_metrics(history_metrics)), "run x")
    assert "loss         5.0000 -> nan" in text
    assert "best         step 90, loss 2.9000" in text
    assert "loss_not_finite" in text and "fix: lower optimizer.lr" in text
