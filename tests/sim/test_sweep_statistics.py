"""Sweep statistics: per-policy Student-t intervals, paired differences on common random
numbers, and the draws every policy of a repetition shares."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from iiotsim.sim import (
    HOUR,
    Connectivity,
    Distribution,
    Scenario,
    ScenarioError,
    compare_policies,
    draw_fleet,
    simulate,
    summarize_sweep,
    sweep,
)

# notebook 02's connectivity (on ~12 h, off lognormal 2 h with sigma 1.5), small
FLEET = Scenario(
    fleet_size=300,
    duration_days=20,
    connectivity=Connectivity(
        on=Distribution.exponential(12 * HOUR), off=Distribution.lognormal(2 * HOUR, 1.5)
    ),
    seed=3,
)
LOCKOUTS = "lockouts_per_1000_device_days"


def test_summary_is_one_row_per_policy_with_student_t_intervals() -> None:
    runs = sweep(
        FLEET.replace(fleet_size=100, duration_days=5),
        repetitions=4,
        processes=1,
        progress=False,
        token__lifetime=[3600, None],
        token__refresh_fraction=[0.25, 0.5],
    )
    assert len(runs) == 16  # sweep still gives one row per run
    table = summarize_sweep(runs, [LOCKOUTS, "rt_leak_exposure_mean_h"])
    assert table.index.names == ["token.lifetime", "token.refresh_fraction"]
    assert len(table) == 4
    one = runs[(runs["token.lifetime"] == 3600) & (runs["token.refresh_fraction"] == 0.25)]
    row = table.loc[(3600, 0.25), LOCKOUTS]
    values = one[LOCKOUTS].to_numpy()
    half = stats.t.ppf(0.975, 3) * values.std(ddof=1) / 2
    assert row["n"] == 4
    assert row["mean"] == pytest.approx(values.mean())
    assert row["half_width"] == pytest.approx(half)
    assert row["low"] == pytest.approx(values.mean() - half)
    assert row["high"] == pytest.approx(values.mean() + half)
    assert row["half_width"] > 0
    infinite = table.loc[(np.nan, 0.5), LOCKOUTS]  # an infinite lifetime never locks out
    assert (infinite["mean"], infinite["half_width"]) == (0.0, 0.0)
    # a wider confidence gives a wider interval; the means alone by one selection
    wider = summarize_sweep(runs, LOCKOUTS, confidence=0.99)
    assert wider.loc[(3600, 0.25), (LOCKOUTS, "half_width")] > row["half_width"]
    means = table.xs("mean", axis=1, level="statistic")
    assert list(means.columns) == [LOCKOUTS, "rt_leak_exposure_mean_h"]
    # also straight off the sweep
    assert runs.pipe(summarize_sweep, LOCKOUTS).equals(summarize_sweep(runs, LOCKOUTS))


def test_one_repetition_gives_a_mean_without_an_interval() -> None:
    runs = sweep(
        FLEET.replace(fleet_size=50, duration_days=3),
        processes=1,
        progress=False,
        token__lifetime=[3600],
    )
    row = summarize_sweep(runs, LOCKOUTS).iloc[0][LOCKOUTS]
    assert row["n"] == 1
    assert row["mean"] == runs[LOCKOUTS].iloc[0]
    assert math.isnan(row["half_width"])


def test_every_policy_of_a_repetition_meets_the_same_weather() -> None:
    short = FLEET.replace(**{"token.lifetime": 6 * HOUR, "token.refresh_fraction": 0.25})
    long = FLEET.replace(**{"token.lifetime": 30 * 24 * HOUR})
    a, b = draw_fleet(short), draw_fleet(long)
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_array_equal(a.online, b.online)
    np.testing.assert_array_equal(a.deploy, b.deploy)
    events_a = simulate(short).events.astype({"kind": str})
    events_b = simulate(long).events.astype({"kind": str})
    for kind in ("rt_leak", "rt_revoked", "reconnect", "disconnect"):
        pd.testing.assert_frame_equal(
            events_a[events_a["kind"] == kind].reset_index(drop=True),
            events_b[events_b["kind"] == kind].reset_index(drop=True),
        )


def test_identical_policies_differ_by_exactly_zero() -> None:
    # with no leaked PT, sharing one or not changes nothing: two names, one policy
    runs = sweep(
        FLEET.replace(fleet_size=100, duration_days=5),
        repetitions=3,
        processes=1,
        progress=False,
        token__lifetime=[6 * HOUR],
        token__shared_provisioning_token=[True, False],
    )
    diff = compare_policies(
        runs,
        {"token.lifetime": 6 * HOUR, "token.shared_provisioning_token": True},
        {"token__lifetime": 6 * HOUR, "token__shared_provisioning_token": False},
    )
    assert (diff["difference"] == 0).all()
    assert (diff.loc[LOCKOUTS, ["low", "high", "half_width"]] == 0).all()
    assert diff.loc[LOCKOUTS, "unpaired_half_width"] > 0  # the runs themselves do vary


def test_common_random_numbers_narrow_the_difference_between_nearby_policies() -> None:
    """Measured (8 repetitions, 6 h against 6.25 h and 1 d against 1.04 d, 1.25 d):
    the paired half-width of the lockout difference is 0.47-0.62 of the unpaired one
    (the token's refresh phase differs by policy, so lockouts only partly share their
    randomness); refreshes 0.26-0.32; messages lost, which connectivity alone
    decides, ~0.04."""
    runs = sweep(
        FLEET,
        repetitions=8,
        processes=2,
        progress=False,
        token__lifetime=[6 * HOUR, 6.25 * HOUR],
    )
    diff = compare_policies(
        runs,
        {"token.lifetime": 6 * HOUR},
        {"token.lifetime": 6.25 * HOUR},
        [LOCKOUTS, "refreshes_per_device_day", "messages_lost"],
    )
    ratio = diff["half_width"] / diff["unpaired_half_width"]
    assert ratio[LOCKOUTS] < 0.75, diff
    assert ratio["refreshes_per_device_day"] < 0.5, diff
    assert ratio["messages_lost"] < 0.2, diff
    assert diff.loc[LOCKOUTS, "high"] < 0  # the longer lifetime locks out less, measurably


def test_a_policy_must_name_one_run_per_repetition() -> None:
    runs = sweep(
        FLEET.replace(fleet_size=30, duration_days=2),
        repetitions=2,
        processes=1,
        progress=False,
        token__lifetime=[3600, 7200],
        token__refresh_fraction=[0.25, 0.5],
    )
    with pytest.raises(ScenarioError) as ambiguous:
        compare_policies(runs, {"token.lifetime": 3600}, {"token.lifetime": 7200})
    assert "token.refresh_fraction" in str(ambiguous.value)
    with pytest.raises(ScenarioError) as unknown:
        compare_policies(runs, {"token.lifetme": 3600}, {"token.lifetime": 7200})
    assert unknown.value.field == "token.lifetme"
    with pytest.raises(ScenarioError) as missing:
        summarize_sweep(runs, ["lockouts_per_day"])
    assert missing.value.field == "metrics"


def test_leak_exposure_is_sampled_to_the_stated_standard_error() -> None:
    """The mean RT-leak exposure is measured until its standard error is <= 2 % of it
    (``leaks.exposure_relative_se``); across seeds the means then scatter by about that
    much, where the 200 leak events alone (the old sample) scattered by ~5 %."""
    day = FLEET.replace(**{"token.lifetime": 24 * HOUR})
    runs = [simulate(day.replace(seed=seed)).summary for seed in range(8)]
    for summary in runs:
        assert summary["rt_leak_exposure_samples"] > 200
        assert summary["rt_leak_exposure_mean_rse"] <= 0.02
    means = np.array([summary["rt_leak_exposure_mean_h"] for summary in runs])
    assert means.std(ddof=1) / means.mean() < 0.035, means
    events_only = day.replace(**{"leaks.exposure_relative_se": None})
    alone = simulate(events_only).summary
    assert alone["rt_leak_exposure_samples"] == 200
    assert alone["rt_leak_exposure_mean_rse"] > 0.03  # what the old default gave
    with pytest.raises(ScenarioError) as bad:
        day.replace(**{"leaks.exposure_relative_se": 0.0})
    assert bad.value.field == "leaks.exposure_relative_se"


def test_a_fleet_reused_across_policies_gives_what_a_fresh_draw_gives() -> None:
    """``simulate`` keeps the last fleet for a run that differs only in its token policy
    (a sweep's repetition); the reuse must not change any result (the start ages, the
    one policy-dependent part, are recomputed)."""
    from iiotsim.sim import model

    six_hours = FLEET.replace(**{"token.lifetime": 6 * HOUR})
    three_days = FLEET.replace(**{"token.lifetime": 72 * HOUR, "token.refresh_fraction": 0.25})
    assert three_days.start == "steady"
    model._last_fleet.clear()
    fresh = simulate(three_days)
    model._last_fleet.clear()
    simulate(six_hours)
    assert model._last_fleet  # kept for the next policy
    reused = simulate(three_days)  # on six_hours' fleet
    pd.testing.assert_series_equal(fresh.summary, reused.summary)
    for name in ("events", "devices", "timeline"):
        pd.testing.assert_frame_equal(getattr(fresh, name), getattr(reused, name))
    other_seed = simulate(three_days.replace(seed=4))
    assert other_seed.summary["lockouts"] != fresh.summary["lockouts"]
