"""The simulator's public seams: the fleet draw hybrid runs reuse, and the error tree."""

from __future__ import annotations

import numpy as np
import pytest

from iiotsim import IiotsimError
from iiotsim.sim import (
    HOUR,
    Connectivity,
    Distribution,
    Scenario,
    ScenarioError,
    draw_fleet,
    simulate,
)


def test_draw_fleet_is_the_connectivity_simulate_draws() -> None:
    scenario = Scenario(
        fleet_size=50,
        duration_days=3,
        connectivity=Connectivity(off=Distribution.exponential(2 * HOUR)),
        seed=11,
    )
    fleet = draw_fleet(scenario)
    times, online = fleet.times[:, :-1], fleet.online
    # a device offline at t=0 (the steady start) did not disconnect there
    before = np.concatenate([fleet.start_online[:, None], online[:, :-1]], axis=1)
    live = fleet.times[:, 1:] > times
    drawn = sorted(zip(*np.nonzero(~online & before & live), strict=True))
    drawn_times = sorted((float(times[d, k]), int(d)) for d, k in drawn)
    events = simulate(scenario).events
    reported = events[events["kind"] == "disconnect"]
    assert drawn_times  # the scenario does disconnect
    assert drawn_times == sorted(
        zip(reported["time"].tolist(), reported["device"].tolist(), strict=True)
    )
    other = draw_fleet(scenario.replace(seed=12))
    assert not np.array_equal(other.times, fleet.times)


def test_scenario_errors_are_iiotsim_errors_and_value_errors() -> None:
    for caught in (ScenarioError, IiotsimError, ValueError):
        with pytest.raises(caught):
            Scenario(fleet_size=0)
