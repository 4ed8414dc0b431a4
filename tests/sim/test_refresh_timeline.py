"""The timeline's refresh rate counts the refreshes the summary counts (issue 11: it
read ~26 % high, spreading each segment's later refreshes to the segment's end)."""

from __future__ import annotations

from typing import Literal

import pytest

from iiotsim.sim import DAY, HOUR, Connectivity, Distribution, Scenario, TokenPolicy, simulate

NOTEBOOK_02 = Connectivity(
    on=Distribution.exponential(12 * HOUR), off=Distribution.lognormal(2 * HOUR, 1.5)
)


def refreshes(lifetime: float, start: Literal["steady", "fresh"]) -> tuple[float, int]:
    """(refreshes in the timeline, refreshes counted per device)."""
    s = Scenario(
        fleet_size=300,
        duration_days=30,
        connectivity=NOTEBOOK_02,
        token=TokenPolicy(lifetime=lifetime, refresh_fraction=0.5),
        start=start,
        seed=4,
    )
    result = simulate(s)
    in_timeline = float(result.timeline["refresh_per_s"].sum() * s.timeline_resolution)
    return in_timeline, int(result.devices["refreshes"].sum())


@pytest.mark.parametrize("lifetime", [6 * HOUR, DAY, 3 * DAY])
def test_a_fresh_fleets_timeline_holds_every_refresh_once(lifetime: float) -> None:
    # the horizon is a multiple of f x L: every device still in phase has a refresh due
    # exactly at the end, which is after the run (in neither count)
    in_timeline, counted = refreshes(lifetime, "fresh")
    assert counted > 1000
    assert in_timeline == pytest.approx(counted, rel=1e-9)


def test_a_steady_fleets_timeline_holds_its_refreshes_on_average() -> None:
    # the first segment's refreshes are spread at 1 / (f x L) (their phase is uniform)
    in_timeline, counted = refreshes(DAY, "steady")
    assert in_timeline == pytest.approx(counted, rel=0.01)
