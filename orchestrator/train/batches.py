"""This rank's training batches, read ahead on a thread while the step computes.

The feeder walks its own copy of the data cursor through the sample order: for each optimizer step,
``accumulation`` micro batches of this rank's part of the global batch (``orchestrator.data.cursor``).
It reads the rows from the memory-mapped shards, and on a GPU pins them, so the step's copy to the
device does not wait (``non_blocking``). ``next()`` returns the batch and the seconds the step waited
for it: ``data_seconds``, which should be a small part of a step.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, replace

import numpy as np

from orchestrator.data.cursor import DataCursor, SampleOrder, rank_positions

_END = object()


@dataclass(frozen=True)
class Feed:
    order: SampleOrder
    rank: int
    world: int
    micro: int
    accumulation: int

    @property
    def global_batch(self) -> int:
        return self.micro * self.world * self.accumulation


class BatchFeeder:
    def __init__(self, dataset, feed: Feed, cursor: DataCursor, pin: bool = False, depth: int = 4):
        self.dataset, self.feed, self.pin = dataset, feed, pin
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._fill, args=(replace(cursor),), name="batch-feeder", daemon=True
        )
        self._thread.start()

    def _fill(self, cursor: DataCursor) -> None:
        try:
            while not self._stop.is_set():
                for micro_step in range(self.feed.accumulation):
                    self._put(self._rows(cursor, micro_step))
                cursor.advance(self.feed.global_batch)
        except BaseException as exc:  # handed to the training thread, which raises it
            self._put(exc)

    def _rows(self, cursor: DataCursor, micro_step: int):
        import torch

        feed = self.feed
        start, count = rank_positions(cursor.sample_in_epoch, micro_step, feed.rank, feed.world, feed.micro)
        ids = feed.order.at(cursor.epoch, start, count)
        batch = torch.from_numpy(self.dataset.rows("train", ids))
        return (batch.pin_memory() if self.pin else batch), ids

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self) -> tuple[object, np.ndarray, float]:
        """(batch [micro, context + 1] on the host, its sample ids, seconds waited for it)."""
        started = time.perf_counter()
        item = self._queue.get()
        waited = time.perf_counter() - started
        if isinstance(item, BaseException):
            raise item
        batch, ids = item
        return batch, ids, waited

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(0.05)


def to_device(batch, device):
    """A host batch on ``device``: to a GPU without waiting for the copy (the batch is pinned)."""
    if getattr(device, "type", str(device)) == "cuda":
        return batch.to(device, non_blocking=True)
    return batch.to(device)
