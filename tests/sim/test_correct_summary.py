"""The summary tells the truth about overloaded fleets (issue 11, items 5-8): approvals
within the run, the fixed point settled, the storm within the broker's capacity, and no
start-up artefact."""

from __future__ import annotations

import numpy as np
import pytest

from iiotsim.sim import Backoff
from iiotsim.sim.storm import simulate_storm


@pytest.mark.parametrize("reset", ["connect", "stable"])
def test_reconnect_storm_never_connects_more_than_the_brokers_capacity(reset: str) -> None:
    """2,000 devices through 5 connects/s need at least 400 s, and no second counts more
    than 5 connects (the old model re-opened a busy second for devices whose back-off,
    reset at connect, brought them back within it: 15 in one second, all back in 288 s)."""
    n, outage, capacity = 2000, 60.0, 5.0
    policy = Backoff(reset="connect") if reset == "connect" else Backoff(reset="stable")
    storm = simulate_storm(n, outage, policy, np.random.default_rng(11), capacity)
    assert np.isfinite(storm.delays).all()
    connected = outage + storm.delays
    per_second = np.bincount(np.floor(connected).astype(np.int64))
    assert per_second.max() <= capacity, per_second.max()
    assert storm.delays.max() >= n / capacity - 1, storm.delays.max()


def test_fractional_capacity_is_honoured_over_time() -> None:
    """0.5 connects/s: 100 devices need about 200 s (the old model rounded up to 1/s)."""
    storm = simulate_storm(100, 10.0, Backoff(), np.random.default_rng(3), 0.5)
    assert storm.delays.max() >= 100 / 0.5 - 2
    connected = np.floor(10.0 + storm.delays)
    assert np.bincount(connected.astype(np.int64)).max() <= 1
