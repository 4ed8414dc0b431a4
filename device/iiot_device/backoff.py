"""Reconnect and retry delays: exponential with full jitter, capped.

Full jitter (a uniformly random delay between 0 and the exponential bound) spreads a
fleet's reconnects after a broker outage instead of bringing them back in lock-step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays for consecutive failures; :meth:`reset` after a success.

    >>> b = Backoff(base=1.0, cap=8.0, rng=random.Random(1))
    >>> [round(b.next(), 2) <= bound for bound in (1, 2, 4, 8, 8)]
    [True, True, True, True, True]
    """

    base: float = 1.0
    cap: float = 300.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={self.base} cap={self.cap}")

    def bound(self) -> float:
        return float(min(self.cap, self.base * 2 ** min(self.attempt, 62)))

    def next(self) -> float:
        delay = self.rng.uniform(0, self.bound())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
