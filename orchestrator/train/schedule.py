"""Linear warmup then cosine annealing, as a picklable LambdaLR factor.

Step s (0-based, the step about to run) uses lr * factor(s):
warmup (s < warmup): (s + 1) / warmup, so the first step already learns;
then cosine from 1 down to min_lr / lr at the last step.

>>> f = WarmupCosine(warmup_steps=2, total_steps=10, min_ratio=0.1)
>>> [round(f(s), 3) for s in (0, 1, 2, 9, 20)]
[0.5, 1.0, 1.0, 0.1, 0.1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WarmupCosine:
    warmup_steps: int
    total_steps: int
    min_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - 1 - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
