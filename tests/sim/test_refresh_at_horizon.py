"""A refresh due exactly at the horizon is after the run, also when it is a segment's
second or later one (found by the hybrid run: the simulator predicted 112 refreshes where
100 real devices made 100 in a day of 1-day tokens)."""

from __future__ import annotations

from iiotsim.sim import Connectivity, Distribution, Scenario, TokenPolicy, simulate

DAY = 86_400.0


def test_a_device_online_all_run_refreshes_at_each_point_before_the_horizon_only() -> None:
    always_online = Connectivity(on=Distribution.fixed(30 * DAY), off=Distribution.fixed(60.0))
    for days, expected in ((1.0, 1), (2.0, 3), (2.25, 4)):  # refresh points every 12 h
        result = simulate(
            Scenario(
                fleet_size=5,
                duration_days=days,
                connectivity=always_online,
                token=TokenPolicy(lifetime=DAY),
                start="fresh",
            )
        )
        assert result.devices["refreshes"].tolist() == [expected] * 5, days
