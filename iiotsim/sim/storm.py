"""Reconnect storms: every device of an outage retrying with its back-off policy.

Attempts during the outage fail; after it, the broker accepts at most
``connects_per_second`` per second (None = all). What happens to an attempt beyond that
capacity is the pitfall: the broker accepts the connection and drops it when overloaded,
so a back-off that resets at every successful connect (``reset="connect"``) starts
again from its base delay and keeps feeding the storm, where ``reset="stable"`` keeps
growing. Vectorised over devices: one step per back-off attempt during the outage and
one per busy second after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .scenario import Backoff


def backoff_delays(
    policy: Backoff, attempt: NDArray[np.int64], rng: np.random.Generator
) -> NDArray[np.float64]:
    """The delay before the next attempt after ``attempt`` failed ones (vectorised)."""
    bound = np.minimum(policy.cap, policy.base * np.exp2(np.minimum(attempt, 60)))
    if policy.kind == "fixed":
        return np.full(attempt.shape, policy.base)
    if policy.kind == "exponential":
        return bound
    return rng.uniform(0.0, bound)


@dataclass
class StormResult:
    delays: NDArray[np.float64]
    """per device: seconds from the outage's end until connected for good"""
    attempt_times: NDArray[np.float64]
    """every connection attempt, seconds from the outage's start"""


def simulate_storm(
    devices: int,
    outage: float,
    policy: Backoff,
    rng: np.random.Generator,
    connects_per_second: float | None = None,
    horizon: float = 30 * 86400.0,
) -> StormResult:
    """``devices`` disconnected at t=0 by an outage lasting ``outage`` seconds."""
    attempts = np.zeros(devices, dtype=np.int64)
    t = backoff_delays(policy, attempts, rng)  # first retry after being dropped
    log: list[NDArray[np.float64]] = []
    # during the outage every attempt fails and the back-off grows
    failing = t < outage
    while failing.any():
        log.append(t[failing])
        attempts[failing] += 1
        t[failing] = t[failing] + backoff_delays(policy, attempts[failing], rng)
        failing = t < outage
    connected_at = np.full(devices, np.nan)
    pending = np.ones(devices, dtype=bool)
    if connects_per_second is None:
        log.append(t.copy())
        connected_at[:] = t
        pending[:] = False
    # the broker admits floor((s + 1) c) - floor(s c) connects in second s (c per second
    # on average, fractional capacities included), counted across every pass over that
    # second: a device dropped early in a second may come back within it and meet a
    # full second (issue 11: re-opening the second let 15 through at 5/s)
    rate = 0.0 if connects_per_second is None else float(connects_per_second)
    second, admitted = -math.inf, 0
    while pending.any():
        idx = np.flatnonzero(pending)
        now = float(t[idx].min())
        if now > horizon:
            break
        if math.floor(now) != second:
            second, admitted = math.floor(now), 0
        allowed = math.floor((second + 1) * rate) - math.floor(second * rate) - admitted
        in_bin = idx[t[idx] < second + 1]
        log.append(t[in_bin].copy())
        order = in_bin[np.argsort(t[in_bin], kind="stable")]
        ok, dropped = order[: max(0, allowed)], order[max(0, allowed) :]
        admitted += len(ok)
        connected_at[ok] = t[ok]
        pending[ok] = False
        if dropped.size:
            if policy.reset == "connect":  # accepted, then dropped: the back-off restarts
                attempts[dropped] = 0
            else:
                attempts[dropped] += 1
            t[dropped] = t[dropped] + backoff_delays(policy, attempts[dropped], rng)
    delays = np.where(np.isnan(connected_at), np.inf, connected_at - outage)
    times = np.concatenate(log) if log else np.empty(0)
    return StormResult(np.maximum(delays, 0.0), times)
