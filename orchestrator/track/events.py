"""What the training loop emits: one value of one metric at one optimizer step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class MetricEvent:
    name: str
    value: float
    step: int


class MetricSink(Protocol):
    def write(self, events: list[MetricEvent]) -> None: ...

    def close(self) -> None: ...
