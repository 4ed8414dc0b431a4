"""fit_connectivity: the family the data were drawn from is picked and its parameters
recovered; data no family describes fall back to the observed durations; bad input names
the column; the fit runs in the simulator; the shipped CSV is what its script makes."""

from __future__ import annotations

import math
import runpy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from iiotsim.sim import (
    DAY,
    HOUR,
    Distribution,
    Scenario,
    ScenarioError,
    fit_connectivity,
    simulate,
)
from iiotsim.sim.distributions import sample
from iiotsim.sim.fit import intervals_from_events

N = 3000
DATA = Path(__file__).parents[2] / "notebooks" / "data"


def frame(on: Any, off: Any, **extra: Any) -> pd.DataFrame:
    on, off = np.asarray(on), np.asarray(off)
    return pd.DataFrame(
        {"state": ["online"] * len(on) + ["offline"] * len(off), "duration_s": np.r_[on, off]}
        | extra
    )


@pytest.mark.parametrize(
    "truth",
    [
        Distribution.lognormal(20 * 60.0, 1.2),
        Distribution.weibull(6 * HOUR, 0.7),
        Distribution.exponential(2 * HOUR),
    ],
    ids=lambda d: d.kind,
)
def test_the_drawn_family_is_chosen_and_its_parameters_recovered(truth: Distribution) -> None:
    rng = np.random.default_rng(11)
    fit = fit_connectivity(frame(sample(truth, rng, N), sample(truth, rng, N)))
    for state in (fit.online, fit.offline):
        assert state.distribution.mean == pytest.approx(truth.mean, rel=0.08)
        if truth.kind == "exponential" and state.chosen == "weibull":
            # the exponential is the Weibull of shape 1; the AIC rule still calls such
            # data Weibull in ~3 % of samples per state (measured, see iiotsim.sim.fit)
            assert state.distribution.shape == pytest.approx(1.0, abs=0.06)
            continue
        assert state.chosen == truth.kind, fit.report()
        if truth.kind != "exponential":
            assert state.distribution.shape == pytest.approx(truth.shape, rel=0.05)
    assert fit.online.chosen == truth.kind  # this seed: the online sample is named right


def test_the_report_lists_every_candidate_with_its_criterion_and_one_choice() -> None:
    rng = np.random.default_rng(2)
    fit = fit_connectivity(frame(rng.exponential(HOUR, 500), rng.lognormal(6, 1.0, 500)))
    report = fit.report()
    assert set(report["family"]) == {"exponential", "weibull", "lognormal", "empirical"}
    assert report.groupby("state")["chosen"].sum().to_dict() == {"offline": 1, "online": 1}
    parametric = report[report["family"] != "empirical"]
    assert parametric[["log_likelihood", "aic", "ks_statistic", "ks_pvalue"]].notna().all().all()
    assert (parametric["aic"] == 2 * np.where(parametric["family"] == "exponential", 1, 2)
            - 2 * parametric["log_likelihood"]).all()  # fmt: skip
    chosen = report[report["chosen"] & (report["state"] == "offline")].iloc[0]
    assert chosen["family"] == "lognormal" and chosen["delta_aic"] == 0
    assert "lognormal" in str(fit)


def test_a_bimodal_sample_falls_back_to_empirical() -> None:
    """Two populations (short radio drops, long nightly power-downs): no single family
    fits, the KS test rejects the best one, the simulator resamples what was observed."""
    rng = np.random.default_rng(5)
    bimodal = np.r_[
        rng.lognormal(math.log(60), 0.3, N // 2), rng.lognormal(math.log(8 * HOUR), 0.3, N // 2)
    ]
    fit = fit_connectivity(frame(rng.exponential(HOUR, N), bimodal))
    assert fit.offline.chosen == "empirical"
    assert fit.offline.best_parametric.ks_pvalue < fit.alpha
    assert "rejected by KS" in fit.offline.reason
    assert fit.connectivity.off.kind == "empirical"
    assert sorted(fit.connectivity.off.sample) == sorted(bimodal.tolist())
    assert fit.online.chosen != "empirical"


@pytest.mark.parametrize(
    ("intervals", "field", "words"),
    [
        (pd.DataFrame({"duration_s": [1.0]}), "intervals.state", "missing column"),
        (pd.DataFrame({"state": ["online"]}), "intervals.duration_s", "missing column"),
        (frame([60.0] * 40, [60.0] * 40).replace("offline", "asleep"), "intervals.state",
         "asleep"),
        (frame([60.0] * 39 + [0.0], [60.0] * 40), "intervals.duration_s", "positive"),
        (frame([60.0] * 39 + [-5.0], [60.0] * 40), "intervals.duration_s", "-5.0"),
        (frame([60.0] * 39 + [float("nan")], [60.0] * 40), "intervals.duration_s", "positive"),
        (frame([60.0] * 39 + ["soon"], [60.0] * 40), "intervals.duration_s", "soon"),
        (frame([60.0] * 40, [60.0] * 3), "intervals.state", "3 'offline' intervals"),
        (frame([60.0] * 40, [60.0] * 40, start=[None] + [0.0] * 79), "intervals.start",
         "missing"),
        ([{"state": "online", "duration_s": 1.0}], "intervals", "DataFrame"),
    ],
)  # fmt: skip
def test_bad_input_names_the_column(intervals: Any, field: str, words: str) -> None:
    with pytest.raises(ScenarioError, match=words) as caught:
        fit_connectivity(intervals)
    assert caught.value.field == field


def test_censored_intervals_are_dropped_and_counted() -> None:
    rng = np.random.default_rng(4)
    intervals = frame(rng.exponential(HOUR, 200), rng.exponential(600, 200))
    intervals["censored"] = False
    intervals.loc[[0, 250], "censored"] = True
    intervals.loc[0, "duration_s"] = 1e9  # an open interval would be absurdly long: ignored
    fit = fit_connectivity(intervals)
    assert fit.censored_dropped == 2
    assert len(fit.online.durations) == 199 and len(fit.offline.durations) == 199
    assert fit.connectivity.on.mean < 2 * HOUR


def diurnal_intervals(amplitude: float, peak_hour: float, rng: np.random.Generator) -> pd.DataFrame:
    """Offline periods as the simulator draws them under its diurnal rule."""
    start = rng.uniform(0, 20 * DAY, N)
    base = sample(Distribution.lognormal(30 * 60.0, 1.0), rng, N)
    off = base * (1 + amplitude * np.cos(2 * np.pi * ((start % DAY) / DAY - peak_hour / 24)))
    on = rng.exponential(4 * HOUR, N)
    epoch = datetime(2026, 3, 2, tzinfo=UTC)
    starts = [
        epoch + timedelta(seconds=float(s)) for s in np.r_[rng.uniform(0, 20 * DAY, N), start]
    ]
    return frame(on, off, start=starts)


def test_a_night_time_pattern_in_offline_periods_is_recovered() -> None:
    fit = fit_connectivity(diurnal_intervals(0.6, 3.0, np.random.default_rng(8)))
    assert fit.diurnal is not None and fit.diurnal.applied
    assert fit.connectivity.diurnal_amplitude == pytest.approx(0.6, abs=0.12)
    assert fit.connectivity.diurnal_peak_hour == pytest.approx(3.0, abs=1.0)
    # the base distribution is fitted to de-seasonalised durations
    assert fit.offline.chosen == "lognormal"
    assert fit.connectivity.off.shape == pytest.approx(1.0, rel=0.1)


def test_no_daily_pattern_is_not_invented() -> None:
    intervals = diurnal_intervals(0.0, 3.0, np.random.default_rng(9))
    fit = fit_connectivity(intervals)
    assert fit.diurnal is not None and not fit.diurnal.applied
    assert fit.connectivity.diurnal_amplitude == 0.0
    assert fit_connectivity(intervals, diurnal=False).diurnal is None
    assert fit_connectivity(intervals.drop(columns="start")).diurnal is None


@pytest.mark.parametrize("bimodal", [False, True], ids=["parametric", "empirical"])
def test_a_fit_round_trips_through_a_scenario_into_the_simulator(bimodal: bool) -> None:
    rng = np.random.default_rng(3)
    off = (
        np.r_[rng.lognormal(4, 0.3, 500), rng.lognormal(10, 0.3, 500)]
        if bimodal
        else rng.lognormal(6, 1.2, 1000)
    )
    fit = fit_connectivity(frame(rng.weibull(0.8, 1000) * 5 * HOUR, off))
    scenario = Scenario(fleet_size=40, duration_days=5, connectivity=fit.connectivity, seed=1)
    assert Scenario.from_json(scenario.to_json()).connectivity == fit.connectivity
    result = simulate(scenario)
    assert result.summary["device_days"] == pytest.approx(40 * 5, rel=0.01)


def test_events_become_intervals_with_takeovers_and_the_open_one_censored() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    events = pd.DataFrame(
        [
            ("b-001", at(0), False),  # a disconnect before any connect: no interval
            ("a-001", at(0), True),
            ("a-001", at(100), True),  # takeover: still online
            ("a-001", at(600), False),
            ("a-001", at(650), False),  # repeated disconnect: still the same offline period
            ("a-001", at(900), True),
            ("b-001", at(50), True),
            ("b-001", at(80), False),
        ],
        columns=["device_id", "at", "connected"],
    ).sample(frac=1, random_state=1)  # any order
    closed = intervals_from_events(events)
    assert closed[["device_id", "state", "duration_s"]].values.tolist() == [
        ["a-001", "online", 600.0],
        ["a-001", "offline", 300.0],
        ["b-001", "online", 30.0],
    ]
    assert not closed["censored"].any()
    until = intervals_from_events(events, until=at(1000))
    assert until[until["censored"]][["device_id", "state", "duration_s"]].values.tolist() == [
        ["a-001", "online", 100.0],
        ["b-001", "offline", 920.0],
    ]
    with pytest.raises(ScenarioError) as caught:
        intervals_from_events(events.drop(columns="connected"))
    assert caught.value.field == "events.connected"


def test_the_shipped_fleet_csv_is_what_its_script_makes_and_fits() -> None:
    script = runpy.run_path(str(DATA / "make_fleet_intervals.py"))
    made = script["intervals"](np.random.default_rng(script["SEED"]))
    shipped = pd.read_csv(DATA / "fleet_intervals.csv", parse_dates=["start", "end"])
    assert 2000 <= len(shipped) <= 10_000
    assert shipped["device_id"].tolist() == made["device_id"].tolist()
    assert shipped["state"].tolist() == made["state"].tolist()
    assert np.allclose(shipped["duration_s"], made["duration_s"])
    fit = fit_connectivity(shipped)
    # the documented truth: Weibull 5 h k 0.7 online; lognormal 25 min sigma 1.3 offline,
    # night-time amplitude 0.5 peaking at 03:00 UTC
    assert (fit.online.chosen, fit.offline.chosen) == ("weibull", "lognormal")
    assert fit.connectivity.on.mean == pytest.approx(5 * HOUR, rel=0.1)
    assert fit.connectivity.off.mean == pytest.approx(25 * 60, rel=0.1)
    assert fit.connectivity.diurnal_amplitude == pytest.approx(0.5, abs=0.1)
    assert fit.devices == 40
