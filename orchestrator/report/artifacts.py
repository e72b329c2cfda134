"""A metric history -> the documented artifacts. Pure functions: the same input, the same files.

``training_metrics.json`` holds exactly five parallel lists, one entry per logging step:
``steps``, ``epochs``, ``train_loss``, ``val_loss`` (null where no evaluation ran), ``learning_rate``.
``training_curve.png``: training loss (blue) and validation loss (red) against steps on top,
learning rate (green, log scale) below. ``loss_by_epoch.png``: the mean training loss of each epoch.

Non-finite values (a diverged loss) are kept exactly: in the JSON they are the strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"`` (strict JSON has no such numbers, and ``null`` means "not
evaluated"); ``load_training_metrics`` reads them back as floats.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from orchestrator.fsutil import atomic_output, atomic_write
from orchestrator.jsonfloat import decode_float, encode_floats

# name -> {step: value}
MetricHistory = dict[str, dict[int, float]]

METRICS_JSON = "training_metrics.json"
CURVE_PNG = "training_curve.png"
EPOCH_PNG = "loss_by_epoch.png"
REPORT_METRICS = ("train_loss", "val_loss", "learning_rate", "epoch")
# Read with the report's metrics; not in the documented lists, the summary uses it.
SUMMARY_METRICS = ("final_val_loss", "final_eval_sequences", "val_sequences")
REPORT_FORMATS = ("json", "png")
PLOT_POINTS = 4000  # most points drawn per line; beyond that the line is drawn from its envelope


def training_metrics(history: MetricHistory) -> dict[str, list]:
    """The documented JSON document. Logging steps are the steps that have a training loss."""
    train = history.get("train_loss", {})
    steps = sorted(train)
    val, lr, epoch = (history.get(k, {}) for k in ("val_loss", "learning_rate", "epoch"))
    return {
        "train_loss": [train[s] for s in steps],
        "val_loss": [val.get(s) for s in steps],
        "learning_rate": [lr.get(s) for s in steps],
        "epochs": [int(epoch[s]) if math.isfinite(epoch.get(s, math.nan)) else None for s in steps],
        "steps": steps,
    }


def final_validation(history: MetricHistory):
    """The run's final validation (a ``FinalValidation``), if it had one: over the whole split, or
    over the seeded sample ``final_eval_sequences`` says of ``val_sequences``."""
    from orchestrator.report.summary import FinalValidation

    values = history.get("final_val_loss")
    if not values:
        return None
    step = max(values)
    seen = history.get("final_eval_sequences", {}).get(step)
    total = history.get("val_sequences", {}).get(step)
    if seen is None or total is None or seen >= total:
        return FinalValidation(values[step])
    return FinalValidation(values[step], f"sample of {seen:,.0f} of {total:,.0f} validation sequences")


def loss_by_epoch(metrics: dict[str, list]) -> dict[int, float]:
    """Mean logged training loss per epoch."""
    sums: dict[int, list[float]] = {}
    for epoch, loss in zip(metrics["epochs"], metrics["train_loss"], strict=True):
        if epoch is not None:
            sums.setdefault(epoch, []).append(loss)  # a NaN loss makes its epoch's mean NaN
    return {epoch: sum(v) / len(v) for epoch, v in sorted(sums.items())}


def metrics_json_text(metrics: dict[str, list]) -> str:
    """The documented lists as strict JSON; non-finite floats become "NaN"/"Infinity"/"-Infinity"."""
    # One list per line: json's C encoder (indent= falls back to the pure-Python one, 10x slower).
    encoded = {k: v if k in ("epochs", "steps") else encode_floats(v) for k, v in metrics.items()}
    lines = [f"  {json.dumps(key)}: {json.dumps(v, allow_nan=False)}" for key, v in encoded.items()]
    return "{\n" + ",\n".join(lines) + "\n}"


def load_training_metrics(path: str | Path) -> dict[str, list]:
    """Read training_metrics.json back, with NaN and infinities as floats again."""
    doc = json.loads(Path(path).read_text())
    return {k: v if k in ("epochs", "steps") else [decode_float(x) for x in v] for k, v in doc.items()}


def write_plots(history: MetricHistory, out_dir: Path) -> list[Path]:
    return _plots(training_metrics(history), Path(out_dir))


def write_tables(history: MetricHistory, out_dir: Path) -> list[Path]:
    """training_metrics.json and summary.json (cheap: rewritten at every logging step)."""
    from orchestrator.report.summary import summarize

    metrics = training_metrics(history)
    return _tables(metrics, summarize(metrics, final_validation(history)), Path(out_dir))


def write_report(history: MetricHistory, out_dir: Path, formats=REPORT_FORMATS) -> list[Path]:
    """The whole report: ``json`` = training_metrics.json + summary.json, ``png`` = both plots."""
    metrics = training_metrics(history)
    return write_report_of(metrics, Path(out_dir), formats, final_validation(history))[0]


def write_report_of(metrics: dict[str, list], out_dir: Path, formats=REPORT_FORMATS, final=None):
    """The whole report from the documented lists (built once), and the run's summary."""
    from orchestrator.report.summary import summarize

    summary = summarize(metrics, final)
    paths = _tables(metrics, summary, out_dir) if "json" in formats else []
    return paths + (_plots(metrics, out_dir) if "png" in formats else []), summary


def _tables(metrics: dict[str, list], summary, out_dir: Path) -> list[Path]:
    from orchestrator.report.summary import write_summary

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / METRICS_JSON
    atomic_write(path, metrics_json_text(metrics).encode())
    return [path, write_summary(summary, out_dir)]


def _plots(metrics: dict[str, list], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [_plot_curve(metrics, out_dir), _plot_epochs(metrics, out_dir)]


def new_figure(nrows: int, height: float):
    import matplotlib

    matplotlib.use("Agg")  # headless: workers and CI have no display
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(nrows, 1, figsize=(9, height), squeeze=False)
    return plt, fig, [row[0] for row in axes]


def envelope(xs, ys, limit: int = PLOT_POINTS) -> tuple[list, list]:
    """At most about ``limit`` points that draw the same line at plot resolution: from each bucket of
    consecutive points its first, lowest, highest and last (so spikes and NaN gaps survive).
    A 100k-step run would otherwise cost seconds of drawing for pixels nobody can tell apart."""
    xs, ys = list(xs), list(ys)
    if len(xs) <= limit:
        return xs, ys
    import numpy as np

    values = np.asarray(ys, dtype=float)
    finite = np.where(np.isfinite(values), values, np.nan)
    size = -(-len(xs) // (limit // 4))
    keep: set[int] = set()
    for start in range(0, len(xs), size):
        stop = min(start + size, len(xs))
        keep.update((start, stop - 1))
        chunk = finite[start:stop]
        if not np.isnan(chunk).all():
            keep.update((start + int(np.nanargmin(chunk)), start + int(np.nanargmax(chunk))))
        keep.update(start + int(i) for i in np.flatnonzero(~np.isfinite(values[start:stop]))[:2])
    order = sorted(keep)
    return [xs[i] for i in order], [ys[i] for i in order]


def _plot_curve(metrics: dict[str, list], out_dir: Path) -> Path:
    plt, fig, (top, bottom) = new_figure(2, 7)
    steps = metrics["steps"]
    top.plot(*envelope(steps, metrics["train_loss"]), color="blue", label="training loss")
    val = [(s, v) for s, v in zip(steps, metrics["val_loss"], strict=True) if v is not None]
    if val:
        top.plot(*envelope(*zip(*val, strict=True)), color="red", marker="o", label="validation loss")
    top.set(xlabel="step", ylabel="loss", title="Loss")
    top.legend()
    top.grid(alpha=0.3)
    lr = [(s, v) for s, v in zip(steps, metrics["learning_rate"], strict=True) if v and v > 0]
    if lr:
        bottom.plot(*envelope(*zip(*lr, strict=True)), color="green", label="learning rate")
        bottom.set_yscale("log")
    bottom.set(xlabel="step", ylabel="learning rate", title="Learning rate")
    bottom.grid(alpha=0.3, which="both")
    return save_figure(plt, fig, out_dir / CURVE_PNG)


def _plot_epochs(metrics: dict[str, list], out_dir: Path) -> Path:
    plt, fig, (ax,) = new_figure(1, 4)
    per_epoch = loss_by_epoch(metrics)
    ax.plot(list(per_epoch), list(per_epoch.values()), color="blue", marker="o")
    ax.set(xlabel="epoch", ylabel="mean training loss", title="Average loss per epoch")
    ax.set_xticks(list(per_epoch))
    ax.grid(alpha=0.3)
    return save_figure(plt, fig, out_dir / EPOCH_PNG)


def save_figure(plt, fig, path: Path) -> Path:
    # Fixed margins instead of tight_layout(): measuring every label's extent cost about 0.25 s of a
    # 100k-step report, and these figures' labels are the same every time.
    top = 1 - 0.35 / fig.get_figheight()
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.5 / fig.get_figheight(), top=top, hspace=0.45)
    try:
        with atomic_output(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return path
