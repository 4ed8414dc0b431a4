"""A fleet deployed at t=0 starts in its steady state (issue 11, item 8): no start-up wave
of refreshes, lockouts from the first day; ``start="fresh"`` keeps the former start."""

from __future__ import annotations

import hashlib
import math

import msgspec
import pandas as pd
import pytest

from iiotsim.sim import (
    DAY,
    HOUR,
    Connectivity,
    Distribution,
    Leaks,
    Provisioning,
    Scenario,
    ScenarioError,
    TokenPolicy,
    draw_fleet,
    simulate,
)
from iiotsim.twin import HybridRun

MOSTLY_ONLINE = Scenario(
    fleet_size=2000,
    duration_days=4,
    connectivity=Connectivity(
        on=Distribution.exponential(7 * DAY), off=Distribution.exponential(10 * 60)
    ),
    token=TokenPolicy(lifetime=DAY, refresh_fraction=0.5),
    leaks=Leaks(registration_tokens=0, exposure_relative_se=None),
    seed=1,
)

NOTEBOOK_02 = Scenario(
    fleet_size=2000,
    duration_days=1,
    connectivity=Connectivity(
        on=Distribution.exponential(12 * HOUR), off=Distribution.lognormal(2 * HOUR, 1.5)
    ),
    token=TokenPolicy(lifetime=DAY, refresh_fraction=0.5),
    provisioning=Provisioning(
        technicians=10_000, approval_time=Distribution.fixed(600), working_hours=None
    ),
    leaks=Leaks(registration_tokens=0, exposure_relative_se=None),
    seed=5,
)


def _peak_over_mean(result: pd.DataFrame) -> float:
    refresh = result["refresh_per_s"].iloc[1:]  # hourly bins after the first
    return float(refresh.max() / refresh.mean())


def test_a_fleet_deployed_at_once_shows_no_start_up_refresh_wave() -> None:
    """2,000 mostly-online devices, 1 d tokens refreshed at 12 h: the default start's
    hourly refresh rate is flat (measured peak/mean 1.05, CV 0.02); the fresh start
    piles every device's first refresh into hour 12 (peak/mean 12.6, CV 1.26)."""
    steady = simulate(MOSTLY_ONLINE).timeline
    assert _peak_over_mean(steady) < 1.3, _peak_over_mean(steady)
    cv = steady["refresh_per_s"].iloc[1:].std() / steady["refresh_per_s"].iloc[1:].mean()
    assert cv < 0.1, cv
    fresh = simulate(MOSTLY_ONLINE.replace(start="fresh")).timeline
    assert _peak_over_mean(fresh) > 5, _peak_over_mean(fresh)
    assert (fresh["refresh_per_s"].iloc[:12] == 0).all()  # nobody refreshes before 12 h


def test_lockouts_start_at_the_warmed_up_rate() -> None:
    """Within the first lifetime a fresh token cannot expire, so a fresh start has no
    lockouts on day 1; a steady start has them at the rate of a fleet run 5 lifetimes
    and discarded (measured: 48 lockouts on day 1 vs 48.9 a day over days 5-20;
    tolerance: 4 Poisson standard errors of the two counts)."""
    first_day = simulate(NOTEBOOK_02).summary["lockouts"]
    assert first_day > 0
    warmed = simulate(NOTEBOOK_02.replace(start="fresh", duration_days=20)).events
    later = int(((warmed["kind"] == "lockout") & (warmed["time"] >= 5 * DAY)).sum())
    per_day = later / 15
    tolerance = 4 * math.sqrt(first_day + later / 15**2)
    assert abs(first_day - per_day) < tolerance, (first_day, per_day, tolerance)
    fresh_day = simulate(NOTEBOOK_02.replace(start="fresh")).summary["lockouts"]
    assert fresh_day == 0


def test_the_steady_phase_is_the_renewal_process_equilibrium() -> None:
    """Online at t=0 with probability mean(on) / (mean(on) + mean(off)) = 12/14; an
    online device's token age is U(0, f*L) (mean 6 h); an offline one's adds the time
    it has been offline (length-biased: lognormal mean 2 h -> elapsed mean e^(s^2) h
    = 9.5 h). Tolerances: 4 standard errors."""
    fleet = draw_fleet(NOTEBOOK_02.replace(fleet_size=20_000))
    p = 12 / 14
    assert abs(fleet.start_online.mean() - p) < 4 * math.sqrt(p * (1 - p) / 20_000)
    ages = fleet.start_age[fleet.start_online] / HOUR
    assert abs(ages.mean() - 6) < 4 * 12 / math.sqrt(12 * len(ages))
    assert ages.max() < 12
    offline = fleet.start_age[~fleet.start_online] / HOUR
    assert offline.mean() > ages.mean() + 5  # older: they have been offline a while
    assert (fleet.online[:, 0] == fleet.start_online).all()  # no outage at t=0 here
    fresh = draw_fleet(NOTEBOOK_02.replace(start="fresh"))
    assert fresh.start_online.all() and (fresh.start_age == 0).all()


def _digest(frame: pd.DataFrame) -> str:
    return hashlib.sha256(
        pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes()
    ).hexdigest()


def test_fresh_start_reproduces_the_former_start_bit_for_bit() -> None:
    """Pinned from the simulator before the steady start existed (commit d0d9573, where
    every fleet started fresh): the same scenario with ``start="fresh"`` gives the
    same frames. Regenerated once since, for the queue's delay that no longer queues a
    replayed lockout behind itself (``QueueState.delay``; the approvals of the 24
    lockouts moved, nothing else; with the former delay the old digests still hold),
    and again for the timeline's refresh rate (spread to each segment's last refresh,
    not its end) and no refresh due exactly at the horizon (5 d = 10 x f x L: devices
    in phase counted one after the run), and once more for the same at a segment's later
    refreshes (a device online through to the horizon: 32 of the 300 counted one refresh
    too many, found by a hybrid run of 100 real devices; events, lockouts and every other
    column unchanged, checked against the former code)."""
    result = simulate(
        Scenario(
            fleet_size=300,
            duration_days=5,
            connectivity=Connectivity(
                on=Distribution.exponential(12 * HOUR), off=Distribution.lognormal(2 * HOUR, 1.5)
            ),
            token=TokenPolicy(lifetime=DAY, refresh_fraction=0.5),
            leaks=Leaks(registration_tokens=20),
            seed=8,
            start="fresh",
        )
    )
    assert (_digest(result.events), len(result.events)) == (
        "06b5215e89b79114ea77605656e58a6a09df0929c8862c73c9d1897e7d938f19",
        5281,
    )
    assert _digest(result.devices) == (
        "1c91c04b92613d88724c9561253ba3424a505b8f1dcc8b4ee825022aa976102f"
    )
    assert _digest(result.timeline) == (
        "0c5d575d16773ead562d3b1a1a23fc2bb8ac8876ac4dd7781f6c4bd9b4c12f72"
    )
    assert result.summary["lockouts"] == 24


def test_fleets_deployed_over_time_start_each_device_fresh() -> None:
    """Deployment over days is real: each device starts fresh when it is deployed, so
    ``start`` changes nothing there."""
    spread = NOTEBOOK_02.replace(fleet_size=200, duration_days=6, deployment_days=3)
    a, b = simulate(spread), simulate(spread.replace(start="fresh"))
    pd.testing.assert_frame_equal(a.timeline, b.timeline)
    pd.testing.assert_series_equal(a.summary, b.summary)
    assert (draw_fleet(spread).start_age == 0).all()


def test_a_hybrid_run_predicts_a_fresh_start() -> None:
    """Its real devices start now with new tokens: its prediction must start fresh."""
    with HybridRun(NOTEBOOK_02.replace(fleet_size=3)) as run:
        assert run.scenario.start == "fresh"


@pytest.mark.parametrize("bad", ["warm", "", "Steady"])
def test_a_bad_start_names_the_field(bad: str) -> None:
    with pytest.raises(ScenarioError) as python:
        Scenario(start=bad)  # type: ignore[arg-type]
    assert python.value.field == "start"
    data = MOSTLY_ONLINE.to_builtins() | {"start": bad}
    with pytest.raises(ScenarioError) as decoded:
        Scenario.from_json(msgspec.json.encode(data))
    assert decoded.value.field == "start"
