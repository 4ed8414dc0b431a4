"""The simulator against closed forms it must reproduce (tolerances stated per test)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from iiotsim.sim import (
    HOUR,
    Backoff,
    Connectivity,
    Distribution,
    Leaks,
    Messages,
    Provisioning,
    Scenario,
    TokenPolicy,
    simulate,
)
from iiotsim.sim.distributions import survival
from iiotsim.sim.storm import simulate_storm
from iiotsim.sim.technicians import approve

FAST_APPROVALS = Provisioning(
    technicians=10_000, approval_time=Distribution.fixed(1.0), working_hours=None
)


def lockout_probability(off: Distribution, lifetime: float, fraction: float) -> float:
    """Refreshed every f*L while online, a device disconnects with token age ~ U(0, f*L)
    (on periods much longer than f*L), so it is locked out when its off period outlasts
    the remaining validity L - a: P = (1/fL) * integral_0^fL S_off(L - a) da."""
    f_l = lifetime * fraction
    ages = np.linspace(0.0, f_l, 4001)
    return float(np.trapezoid(survival(off, lifetime - ages), ages) / f_l)


@pytest.mark.parametrize(
    "off",
    [Distribution.exponential(4 * HOUR), Distribution.lognormal(4 * HOUR, 1.0)],
    ids=["exponential", "lognormal"],
)
def test_lockout_fraction_follows_the_off_duration_survival_function(off: Distribution) -> None:
    lifetime, fraction = 10 * HOUR, 0.5
    scenario = Scenario(
        fleet_size=2000,
        duration_days=200,
        connectivity=Connectivity(on=Distribution.exponential(50 * lifetime * fraction), off=off),
        token=TokenPolicy(lifetime=lifetime, refresh_fraction=fraction),
        provisioning=FAST_APPROVALS,
        messages=Messages(rate_per_hour=0),
        seed=7,
    )
    result = simulate(scenario)
    reconnects = int(result.devices["connects"].sum())
    observed = result.devices["lockouts"].sum() / reconnects
    expected = lockout_probability(off, lifetime, fraction)
    # tolerance: 4 binomial standard errors plus 3% of p for the U(0, fL) approximation
    tolerance = 4 * math.sqrt(expected * (1 - expected) / reconnects) + 0.03 * expected
    assert reconnects > 30_000
    assert abs(observed - expected) < tolerance, (observed, expected, tolerance)


def test_infinite_lifetime_never_locks_out_and_a_leak_lasts_until_revoked() -> None:
    base = Scenario(
        fleet_size=500,
        duration_days=60,
        connectivity=Connectivity(off=Distribution.exponential(30 * 86400)),  # long outages
        token=TokenPolicy(lifetime=None),
        leaks=Leaks(registration_tokens=50, detection_delay=Distribution.fixed(5 * 86400)),
        seed=3,
    )
    result = simulate(base)
    assert result.summary["lockouts"] == 0
    assert result.summary["refreshes_per_device_day"] == 0
    # exposure is exactly the detection delay: nothing else ever ends the token
    assert result.summary["rt_leak_exposure_mean_h"] == pytest.approx(120.0)
    undetected = simulate(base.replace(**{"leaks.detection_probability": 0.0}))
    assert math.isinf(undetected.summary["rt_leak_exposure_mean_h"])


def test_finite_lifetime_bounds_a_leak_by_the_next_refresh_plus_grace() -> None:
    """Always online, refreshed every f*L: a leaked token is superseded at the next
    refresh (age uniform) and usable for the grace period after it, so exposure is
    U(0, f*L) + grace: mean f*L/2 + grace (tolerance: 4 standard errors)."""
    lifetime, fraction, grace = 8 * HOUR, 0.5, 300.0
    result = simulate(
        Scenario(
            fleet_size=200,
            duration_days=30,
            connectivity=Connectivity(
                on=Distribution.fixed(1000 * 86400), off=Distribution.fixed(1.0)
            ),
            token=TokenPolicy(lifetime=lifetime, refresh_fraction=fraction, grace_period=grace),
            leaks=Leaks(registration_tokens=2000, detection_delay=Distribution.fixed(30 * 86400)),
            seed=11,
        )
    )
    f_l = lifetime * fraction
    expected_h = (f_l / 2 + grace) / HOUR
    se_h = f_l / math.sqrt(12) / math.sqrt(2000) / HOUR
    assert abs(result.summary["rt_leak_exposure_mean_h"] - expected_h) < 4 * se_h
    assert result.summary["rt_leak_exposure_p95_h"] <= (f_l + grace) / HOUR + 1e-9


def erlang_c_wait(arrival_rate: float, service_rate: float, servers: int) -> float:
    """Mean wait in queue of an M/M/c queue (Erlang C)."""
    a = arrival_rate / service_rate
    rho = a / servers
    top = a**servers / math.factorial(servers) / (1 - rho)
    bottom = sum(a**k / math.factorial(k) for k in range(servers)) + top
    return (top / bottom) / (servers * service_rate - arrival_rate)


def test_scarce_technicians_queue_like_m_m_c() -> None:
    """Poisson approval requests (3/h), exponential handling (mean 1 h), 4 technicians
    around the clock: mean time to approval = Erlang C wait + 1 h (tolerance 10%: a queue
    at 75% load is strongly autocorrelated; 40,000 requests)."""
    rng = np.random.default_rng(5)
    lam, mu, c = 3 / HOUR, 1 / HOUR, 4
    arrivals = np.cumsum(rng.exponential(1 / lam, 40_000))
    provisioning = Provisioning(
        technicians=c, approval_time=Distribution.exponential(1 / mu), working_hours=None
    )
    done = approve(arrivals, provisioning, np.random.default_rng(6))
    expected = erlang_c_wait(lam, mu, c) + 1 / mu
    assert np.mean(done - arrivals) == pytest.approx(expected, rel=0.10)


def test_approvals_wait_for_working_hours() -> None:
    night = np.array([20 * HOUR, 2 * 86400 + 3 * HOUR])  # 20:00 day 0, 03:00 day 2
    done = approve(
        night,
        Provisioning(technicians=1, approval_time=Distribution.fixed(600), working_hours=(8, 17)),
        np.random.default_rng(0),
    )
    assert list(done) == [86400 + 8 * HOUR + 600, 2 * 86400 + 8 * HOUR + 600]


def test_storm_under_full_jitter_reconnects_within_the_base_delay() -> None:
    """A broker restart (outage ~0): each device's first retry is U(0, base) and succeeds,
    so all are back by the maximum of N uniforms, base*N/(N+1) on average (tolerance:
    within 10/N of base), and the mean delay is base/2 (4 standard errors)."""
    n, base = 10_000, 8.0
    storm = simulate_storm(
        n, 1e-9, Backoff(kind="full_jitter", base=base, cap=300), np.random.default_rng(1)
    )
    assert base * (1 - 10 / n) < storm.delays.max() <= base
    assert abs(storm.delays.mean() - base / 2) < 4 * base / math.sqrt(12 * n)


def test_storm_with_limited_capacity_takes_at_least_n_over_capacity() -> None:
    n, capacity = 5000, 100.0
    storm = simulate_storm(
        n, 60.0, Backoff(kind="full_jitter", base=1, cap=120), np.random.default_rng(2), capacity
    )
    assert np.isfinite(storm.delays).all()
    assert storm.delays.max() >= n / capacity - 1
    # no second ever admits more than the capacity
    accepted = np.sort(60.0 + storm.delays)
    per_second = np.bincount(np.floor(accepted).astype(int))
    assert per_second.max() <= capacity


def test_pitfall_backoff_reset_at_connect_feeds_the_storm() -> None:
    """An overloaded broker that accepts and drops: a back-off reset at every connect keeps
    retrying at the base delay, a stable-reset one backs off. Counted after the outage."""
    n, outage, capacity = 2000, 60.0, 2.0
    stable = simulate_storm(n, outage, Backoff(reset="stable"), np.random.default_rng(3), capacity)
    naive = simulate_storm(n, outage, Backoff(reset="connect"), np.random.default_rng(3), capacity)
    after_stable = int((stable.attempt_times >= outage).sum())
    after_naive = int((naive.attempt_times >= outage).sum())
    assert after_naive > 10 * after_stable, (after_naive, after_stable)


def test_pitfall_wiped_token_store_turns_lockouts_permanent() -> None:
    base = Scenario(
        fleet_size=300,
        duration_days=30,
        connectivity=Connectivity(off=Distribution.exponential(2 * 86400)),
        token=TokenPolicy(lifetime=86400),
        provisioning=FAST_APPROVALS,
        seed=4,
    )
    kept = simulate(base)
    wiped = simulate(base.replace(**{"token.wipe_store_on_expiry": True}))
    assert kept.summary["lockouts"] > 0 and kept.summary["permanent_lockouts"] == 0
    assert wiped.summary["permanent_lockouts"] > 0
    assert wiped.summary["online_fraction"] < kept.summary["online_fraction"] - 0.1


def test_pitfall_duplicate_ids_without_backoff_hammer_the_broker() -> None:
    base = Scenario(fleet_size=10, duration_days=1, seed=1)
    base = base.replace(**{"pitfalls.duplicate_id_pairs": 5})
    naive = simulate(base.replace(**{"backoff.reset": "connect"}))
    stable = simulate(base)
    # 2 takeovers per pair per mean delay: base/2 vs cap/2 with full jitter
    assert naive.summary["duplicate_id_connects_per_s"] == pytest.approx(2 * 5 / 0.5)
    assert stable.summary["duplicate_id_connects_per_s"] == pytest.approx(2 * 5 / 150)


def test_same_scenario_and_seed_give_identical_frames() -> None:
    import pandas as pd

    scenario = Scenario(
        fleet_size=300,
        duration_days=20,
        token=TokenPolicy(lifetime=6 * HOUR),
        connectivity=Connectivity(off=Distribution.weibull(3 * HOUR, 0.7)),
        leaks=Leaks(registration_tokens=10, provisioning_tokens=1),
        seed=42,
    )
    a, b = simulate(scenario), simulate(scenario)
    for name in ("events", "devices", "timeline"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    pd.testing.assert_series_equal(a.summary, b.summary)
    other = simulate(scenario.replace(seed=43))
    assert not a.devices.equals(other.devices)


@pytest.mark.parametrize("hours", [None, (8.0, 17.0)])
def test_queue_recursion_matches_the_simpy_resource(hours: tuple[float, float] | None) -> None:
    """Large fleets use the FCFS recursion; it must give simpy's approval times exactly."""
    rng = np.random.default_rng(8)
    arrivals = rng.uniform(0, 10 * 86400, 3000)
    provisioning = Provisioning(
        technicians=3, approval_time=Distribution.lognormal(1800, 1.0), working_hours=hours
    )
    simpy_done = approve(arrivals, provisioning, np.random.default_rng(9), engine="simpy")
    fcfs_done = approve(arrivals, provisioning, np.random.default_rng(9), engine="recursion")
    np.testing.assert_allclose(fcfs_done, simpy_done, rtol=0, atol=1e-6)
