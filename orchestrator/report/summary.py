"""A run's summary and diagnostics, computed from the documented metric lists.

>>> from orchestrator.report.artifacts import training_metrics
>>> lr = {5: 5e-4, 10: 1e-3, 15: 1e-4}  # warmup to the peak at step 10, then decay
>>> s = summarize(training_metrics({"train_loss": {5: 4.0, 10: 3.5, 15: 3.0}, "learning_rate": lr}))
>>> s.loss_reduction, s.peak_lr, s.lr_decay_from_peak, s.lr_final_over_initial
(1.0, 0.001, 10.0, 0.2)

Diagnostics look at the logged training loss (and, for overfitting, the last validation point); each
comes with the change that most often fixes it.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from orchestrator.fsutil import atomic_write
from orchestrator.jsonfloat import encode_float
from orchestrator.text import format_number

SUMMARY_JSON = "summary.json"
OVERFIT_GAP = 0.5  # final validation loss minus training loss above this: overfitting
FLAT_FRACTION = 0.01  # less than 1% net reduction: the loss is not decreasing


class Diagnostic(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str
    message: str
    fix: str


class RunSummary(BaseModel):
    """Every float may be NaN or infinite; ``to_json`` writes those as strings."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    total_steps: int
    logged_points: int
    initial_loss: float | None
    final_loss: float | None
    loss_reduction: float | None  # initial - final
    loss_reduction_pct: float | None  # 100 * reduction / initial
    initial_lr: float | None  # at the first logged step (often inside warmup)
    peak_lr: float | None  # the largest logged
    final_lr: float | None
    lr_decay_from_peak: float | None  # peak_lr / final_lr: 10.0 means the LR ended 10x below its peak
    lr_final_over_initial: float | None  # final_lr / initial_lr, the ratio of the documented analysis
    best_step: int | None
    best_loss: float | None
    best_val_step: int | None
    best_val_loss: float | None
    final_val_loss: float | None  # on the whole validation split at the end, if measured (see scope)
    # "whole validation split", "sample of N of M validation sequences" or "last evaluation"
    final_val_scope: str | None
    diagnostics: list[Diagnostic]

    def to_json(self) -> str:
        doc = {k: encode_float(v) if isinstance(v, float) else v for k, v in self.model_dump().items()}
        return json.dumps(doc, indent=2, allow_nan=False)


@dataclass(frozen=True)
class FinalValidation:
    """The run's final validation (``final_val_loss``), which the summary prefers to the last
    periodic evaluation: over the whole split, or over a seeded sample of it."""

    loss: float
    scope: str = "whole validation split"


def summarize(metrics: dict[str, list], final_validation: FinalValidation | None = None) -> RunSummary:
    """The run's summary and diagnostics; ``final_validation``: the run's, if it had one."""
    steps, train = metrics["steps"], metrics["train_loss"]
    lr = [v for v in metrics["learning_rate"] if v is not None]
    initial, final = (train[0], train[-1]) if train else (None, None)
    reduction = None if initial is None else initial - final
    best = _best(steps, train)
    best_val = _best(steps, metrics["val_loss"])
    vals = [v for v in metrics["val_loss"] if v is not None]
    return RunSummary(
        total_steps=steps[-1] if steps else 0,
        logged_points=len(steps),
        initial_loss=initial,
        final_loss=final,
        loss_reduction=reduction,
        loss_reduction_pct=_ratio(reduction, initial, 100.0),
        initial_lr=lr[0] if lr else None,
        peak_lr=max(lr) if lr else None,
        final_lr=lr[-1] if lr else None,
        lr_decay_from_peak=_ratio(max(lr), lr[-1]) if lr else None,
        lr_final_over_initial=_ratio(lr[-1], lr[0]) if lr else None,
        best_step=best[0],
        best_loss=best[1],
        best_val_step=best_val[0],
        best_val_loss=best_val[1],
        **_final_validation(vals, final_validation),
        diagnostics=diagnose(metrics),
    )


def _final_validation(vals: list[float], final: FinalValidation | None) -> dict:
    if final is not None:
        return {"final_val_loss": final.loss, "final_val_scope": final.scope}
    if vals:
        return {"final_val_loss": vals[-1], "final_val_scope": "last evaluation"}
    return {"final_val_loss": None, "final_val_scope": None}


def _best(steps: list[int], values: list) -> tuple[int | None, float | None]:
    finite = [(v, s) for s, v in zip(steps, values, strict=True) if v is not None and math.isfinite(v)]
    if not finite:
        return None, None
    value, step = min(finite, key=lambda pair: (pair[0], pair[1]))
    return step, value


def _ratio(numerator: float | None, denominator: float | None, scale: float = 1.0) -> float | None:
    if numerator is None or not denominator:
        return None
    return scale * numerator / denominator


def diagnose(metrics: dict[str, list]) -> list[Diagnostic]:
    train = metrics["train_loss"]
    found = []
    if any(not math.isfinite(v) for v in train):
        found.append(_non_finite(metrics))
    finite = [v for v in train if math.isfinite(v)]
    if len(finite) >= 2:
        found += _trend(finite)
    if len(finite) >= 5 and _oscillates(finite):
        found.append(
            Diagnostic(
                code="loss_oscillating",
                message="the training loss swings up and down more than it moves overall",
                fix="lower optimizer.lr, raise the batch (train.gradient_accumulation_steps) or "
                "lengthen schedule.warmup_steps",
            )
        )
    overfit = _overfitting(metrics)
    return found + ([overfit] if overfit else [])


def _non_finite(metrics: dict[str, list]) -> Diagnostic:
    step = next(
        s for s, v in zip(metrics["steps"], metrics["train_loss"], strict=True) if not math.isfinite(v)
    )
    return Diagnostic(
        code="loss_not_finite",
        message=f"the training loss is NaN or infinite from step {step} on",
        fix="lower optimizer.lr, keep optimizer.grad_clip on (e.g. 1.0), or train in fp32/bf16 "
        "instead of fp16",
    )


def _trend(finite: list[float]) -> list[Diagnostic]:
    initial, final = finite[0], finite[-1]
    scale = max(abs(initial), 1e-12)
    if final > initial + FLAT_FRACTION * scale:
        return [
            Diagnostic(
                code="loss_increasing",
                message=f"the training loss rose from {initial:.4g} to {final:.4g}",
                fix="lower optimizer.lr (try 3-10x lower) and check schedule.warmup_steps",
            )
        ]
    if initial - final < FLAT_FRACTION * scale:
        return [
            Diagnostic(
                code="loss_not_decreasing",
                message=f"the training loss barely moved ({initial:.4g} -> {final:.4g}, under 1%)",
                fix="raise optimizer.lr, train longer (train.epochs / train.max_steps), or check the data",
            )
        ]
    return []


def _oscillates(values: list[float]) -> bool:
    """Direction flips on most steps, and the path travelled is over 3x the net change."""
    diffs = [b - a for a, b in itertools.pairwise(values)]
    flips = sum(1 for a, b in itertools.pairwise(diffs) if a * b < 0)
    travelled = sum(abs(d) for d in diffs)
    return flips >= 0.5 * (len(diffs) - 1) and travelled > 3 * abs(values[-1] - values[0])


def _overfitting(metrics: dict[str, list]) -> Diagnostic | None:
    pairs = [
        (s, t, v)
        for s, t, v in zip(metrics["steps"], metrics["train_loss"], metrics["val_loss"], strict=True)
        if v is not None and math.isfinite(v) and math.isfinite(t)
    ]
    if not pairs:
        return None
    step, train, val = pairs[-1]
    if val - train <= OVERFIT_GAP:
        return None
    return Diagnostic(
        code="overfitting",
        message=f"at step {step} the validation loss ({val:.4g}) is {val - train:.2f} above the "
        f"training loss ({train:.4g})",
        fix="stop earlier (fewer train.epochs), add model.dropout or optimizer.weight_decay, or use "
        "more data",
    )


def write_summary(summary: RunSummary, out_dir: Path) -> Path:
    path = Path(out_dir) / SUMMARY_JSON
    atomic_write(path, summary.to_json().encode())
    return path


def render_summary(summary: RunSummary, title: str = "") -> str:
    """The short human summary `orchestrator report` prints."""
    s, f = summary, format_number
    lines = [title] if title else []
    lines += [
        f"steps        {s.total_steps} ({s.logged_points} logged)",
        f"loss         {f(s.initial_loss)} -> {f(s.final_loss)} "
        f"(reduction {f(s.loss_reduction)}, {f(s.loss_reduction_pct, '.1f')}%)",
        f"lr           {f(s.initial_lr, '.3e')} -> peak {f(s.peak_lr, '.3e')} -> {f(s.final_lr, '.3e')} "
        f"({f(s.lr_decay_from_peak, '.3g')}x below the peak; "
        f"final/initial {f(s.lr_final_over_initial, '.3g')})",
        f"best         step {s.best_step}, loss {f(s.best_loss)}",
        f"best val     step {s.best_val_step}, loss {f(s.best_val_loss)}",
        f"final val    loss {f(s.final_val_loss)}" + (f" ({s.final_val_scope})" if s.final_val_scope else ""),
    ]
    if not s.diagnostics:
        return "\n".join([*lines, "diagnostics  none: the loss decreases and validation follows"])
    lines.append("diagnostics")
    for d in s.diagnostics:
        lines += [f"  {d.code}: {d.message}", f"    fix: {d.fix}"]
    return "\n".join(lines)
