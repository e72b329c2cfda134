"""Where training is in the data, and which samples come next: independent of the number of ranks.

The global order of an epoch's training samples is a function of the seed and the epoch alone
(``SampleOrder``). An optimizer step consumes the next ``global_batch`` positions of that order; rank
``r`` of ``world`` takes, for micro step ``a``, the ``micro`` positions starting at
``a * world * micro + r * micro``. Any split of the same global batch over ranks and accumulation
steps therefore covers the same samples, so a run resumed on another number of workers (with the
global batch kept) sees exactly the samples the uninterrupted run would have seen.

The ``DataCursor`` is the whole data position: the epoch and how many samples of it all ranks
together have consumed. It is small, and saved in every checkpoint.

>>> cursor = DataCursor(seed=1, samples_per_epoch=10)
>>> cursor.advance(4); cursor.advance(4); cursor.state_dict()["sample_in_epoch"]
8
>>> cursor.advance(4); (cursor.epoch, cursor.sample_in_epoch)
(2, 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Up to this many samples an epoch is one full permutation; beyond it, a permutation of windows of
# this many consecutive samples, each shuffled inside (memory stays O(window), order stays exact).
WINDOW = 1 << 22


class SampleOrder:
    """The order of ``n`` samples in each epoch, from the seed and the epoch alone."""

    def __init__(self, n: int, seed: int, window: int = WINDOW):
        self.n, self.seed, self.window = n, seed, max(1, window)
        self._cached: tuple[tuple[int, int], np.ndarray] | None = None

    def _windows(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        count = -(-self.n // self.window)
        order = np.random.default_rng([self.seed, epoch, 0]).permutation(count)
        sizes = np.minimum(self.window, self.n - order * self.window)
        return order, np.concatenate([[0], np.cumsum(sizes)])

    def _inside(self, epoch: int, window: int) -> np.ndarray:
        key = (epoch, window)
        if self._cached is None or self._cached[0] != key:
            first = window * self.window
            size = min(self.window, self.n - first)
            self._cached = (
                key,
                first + np.random.default_rng([self.seed, epoch, 1, window]).permutation(size),
            )
        return self._cached[1]

    def at(self, epoch: int, start: int, count: int) -> np.ndarray:
        """The sample indices at positions [start, start + count) of the epoch's order."""
        order, bounds = self._windows(epoch)
        out = np.empty(count, dtype=np.int64)
        done = 0
        while done < count:
            position = start + done
            slot = int(np.searchsorted(bounds, position, side="right")) - 1
            inside = self._inside(epoch, int(order[slot]))
            offset = position - int(bounds[slot])
            take = min(count - done, len(inside) - offset)
            out[done : done + take] = inside[offset : offset + take]
            done += take
        return out


def rank_positions(step_start: int, micro_step: int, rank: int, world: int, micro: int) -> tuple[int, int]:
    """(first position, count) of the samples rank ``rank`` trains on in one micro step."""
    return step_start + micro_step * world * micro + rank * micro, micro


@dataclass
class DataCursor:
    """The data position: the epoch (1-based) and the samples of it consumed by all ranks together."""

    seed: int
    samples_per_epoch: int  # positions used per epoch: whole global batches
    epoch: int = 1
    sample_in_epoch: int = 0
    dataset: str = field(default="")  # the manifest digest the position refers to

    def advance(self, samples: int) -> bool:
        """Move past ``samples`` positions; True when that ended the epoch."""
        self.sample_in_epoch += samples
        if self.sample_in_epoch >= self.samples_per_epoch:
            self.epoch += 1
            self.sample_in_epoch = 0
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "sample_in_epoch": self.sample_in_epoch,
            "samples_per_epoch": self.samples_per_epoch,
            "dataset": self.dataset,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; refused when it belongs to other data or another order."""
        if state.get("dataset") and self.dataset and state["dataset"] != self.dataset:
            raise ValueError(
                f"the checkpoint's data position is in dataset {state['dataset'][:12]}, this run reads "
                f"{self.dataset[:12]}: the sample order would not continue"
            )
        if state["seed"] != self.seed or state["samples_per_epoch"] != self.samples_per_epoch:
            raise ValueError(
                "the checkpoint's sample order (seed, samples per epoch) differs from this run's: the "
                "global batch or train.seed changed"
            )
        self.epoch, self.sample_in_epoch = int(state["epoch"]), int(state["sample_in_epoch"])


def evaluation_sample(n_val: int, count: int, seed: int) -> np.ndarray:
    """A fixed, seeded sample of ``count`` validation samples spread over the whole split (sorted, so
    reads go forward): the same samples at every evaluation, and a prefix of the same permutation
    whatever ``count`` is."""
    count = min(count, n_val)
    if count >= n_val:
        return np.arange(n_val, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, 7]).permutation(n_val)[:count])
