"""The training state a checkpoint carries besides DeepSpeed's own (weights, optimizer, scheduler)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrainingState:
    step: int = 0  # optimizer steps done
    epoch: int = 1  # the epoch the next batch belongs to
    micro_batches_done: int = 0  # of this rank's shard in the current epoch: the data position
    skipped_batches: int = 0  # non-finite losses skipped (nan_policy: skip)
    early_stopping: dict[str, Any] = field(default_factory=dict)
    last_eval: dict[str, float] = field(default_factory=dict)  # metric -> value of the last evaluation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> TrainingState:
        return cls(**fields)


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
