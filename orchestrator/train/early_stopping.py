"""Early stopping on an evaluation metric, with patience and a minimum improvement.

>>> stopper = EarlyStopping(metric="val_loss", patience=2, min_delta=0.01)
>>> [stopper.update(v, step) for step, v in ((10, 3.0), (20, 2.5), (30, 2.495), (40, 2.6))]
[False, False, False, True]
>>> stopper.reason
'early stopping: val_loss has not improved by more than 0.01 for 2 evaluations (best 2.5 at step 20)'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class EarlyStopping:
    metric: str = "val_loss"
    patience: int = 3
    min_delta: float = 0.0
    enabled: bool = True
    best: float | None = None
    best_step: int | None = None
    bad_evaluations: int = 0
    reason: str | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "val_accuracy"

    def improves(self, value: float) -> bool:
        if self.best is None:
            return True
        gain = value - self.best if self.higher_is_better else self.best - value
        return gain > self.min_delta

    def update(self, value: float, step: int) -> bool:
        """Record one evaluation; True when training should stop now."""
        if self.improves(value):
            self.best, self.best_step, self.bad_evaluations = value, step, 0
            return False
        self.bad_evaluations += 1
        if self.enabled and self.bad_evaluations >= self.patience:
            self.reason = (
                f"early stopping: {self.metric} has not improved by more than {self.min_delta:g} for "
                f"{self.bad_evaluations} evaluations (best {self.best:.4g} at step {self.best_step})"
            )
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("best", "best_step", "bad_evaluations", "reason"):
            setattr(self, key, state.get(key))
        self.bad_evaluations = self.bad_evaluations or 0


def from_spec(spec) -> EarlyStopping:
    """Always tracks the best value (the best checkpoint needs it); stops only when enabled."""
    es = spec.early_stopping
    return EarlyStopping(es.metric, es.patience, es.min_delta, es.enabled)
