"""The training state a checkpoint carries besides DeepSpeed's own (weights, optimizer, scheduler) and
the data cursor's: the step counter, skipped batches, the last evaluation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrainingState:
    step: int = 0  # optimizer steps done
    skipped_batches: int = 0  # non-finite losses skipped (nan_policy: skip)
    last_eval: dict[str, float] = field(default_factory=dict)  # metric -> value of the last evaluation

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, fields: dict[str, Any]) -> None:
        self.step = int(fields["step"])
        self.skipped_batches = int(fields.get("skipped_batches", 0))
        self.last_eval = dict(fields.get("last_eval", {}))


def capture_rng() -> dict[str, Any]:
    """This process's random generators (dropout masks come from torch's)."""
    import random

    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
