"""A metric history -> the documented artifacts. Pure functions: the same input, the same files.

``training_metrics.json`` holds exactly five parallel lists, one entry per logging step:
``steps``, ``epochs``, ``train_loss``, ``val_loss`` (null where no evaluation ran), ``learning_rate``.
``training_curve.png``: training loss (blue) and validation loss (red) against steps on top,
learning rate (green, log scale) below. ``loss_by_epoch.png``: the mean training loss of each epoch.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from orchestrator.fsutil import atomic_write

# name -> {step: value}
MetricHistory = dict[str, dict[int, float]]

METRICS_JSON = "training_metrics.json"
CURVE_PNG = "training_curve.png"
EPOCH_PNG = "loss_by_epoch.png"
REPORT_METRICS = ("train_loss", "val_loss", "learning_rate", "epoch")


def training_metrics(history: MetricHistory) -> dict[str, list]:
    """The documented JSON document. Logging steps are the steps that have a training loss."""
    train = history.get("train_loss", {})
    steps = sorted(train)
    val, lr, epoch = (history.get(k, {}) for k in ("val_loss", "learning_rate", "epoch"))
    return {
        "train_loss": [train[s] for s in steps],
        "val_loss": [val.get(s) for s in steps],
        "learning_rate": [lr.get(s) for s in steps],
        "epochs": [int(epoch[s]) if s in epoch else None for s in steps],
        "steps": steps,
    }


def loss_by_epoch(metrics: dict[str, list]) -> dict[int, float]:
    """Mean logged training loss per epoch."""
    sums: dict[int, list[float]] = {}
    for epoch, loss in zip(metrics["epochs"], metrics["train_loss"], strict=True):
        if epoch is not None:
            sums.setdefault(epoch, []).append(loss)
    return {epoch: sum(v) / len(v) for epoch, v in sorted(sums.items())}


def write_metrics_json(history: MetricHistory, out_dir: Path) -> Path:
    path = Path(out_dir) / METRICS_JSON
    atomic_write(path, json.dumps(training_metrics(history), indent=2).encode())
    return path


def write_plots(history: MetricHistory, out_dir: Path) -> list[Path]:
    metrics = training_metrics(history)
    return [_plot_curve(metrics, Path(out_dir)), _plot_epochs(metrics, Path(out_dir))]


def write_report(history: MetricHistory, out_dir: Path) -> list[Path]:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return [write_metrics_json(history, out_dir), *write_plots(history, out_dir)]


def _figure(nrows: int, height: float):
    import matplotlib

    matplotlib.use("Agg")  # headless: workers and CI have no display
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(nrows, 1, figsize=(9, height), squeeze=False)
    return plt, fig, [row[0] for row in axes]


def _plot_curve(metrics: dict[str, list], out_dir: Path) -> Path:
    plt, fig, (top, bottom) = _figure(2, 7)
    steps = metrics["steps"]
    top.plot(steps, metrics["train_loss"], color="blue", label="training loss")
    val = [(s, v) for s, v in zip(steps, metrics["val_loss"], strict=True) if v is not None]
    if val:
        top.plot(*zip(*val, strict=True), color="red", marker="o", label="validation loss")
    top.set(xlabel="step", ylabel="loss", title="Loss")
    top.legend()
    top.grid(alpha=0.3)
    lr = [(s, v) for s, v in zip(steps, metrics["learning_rate"], strict=True) if v]
    if lr:
        bottom.plot(*zip(*lr, strict=True), color="green", label="learning rate")
        bottom.set_yscale("log")
    bottom.set(xlabel="step", ylabel="learning rate", title="Learning rate")
    bottom.grid(alpha=0.3, which="both")
    return _save(plt, fig, out_dir / CURVE_PNG)


def _plot_epochs(metrics: dict[str, list], out_dir: Path) -> Path:
    plt, fig, (ax,) = _figure(1, 4)
    per_epoch = loss_by_epoch(metrics)
    ax.plot(list(per_epoch), list(per_epoch.values()), color="blue", marker="o")
    ax.set(xlabel="epoch", ylabel="mean training loss", title="Average loss per epoch")
    ax.set_xticks(list(per_epoch))
    ax.grid(alpha=0.3)
    return _save(plt, fig, out_dir / EPOCH_PNG)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
