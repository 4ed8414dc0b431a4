"""A sweep runs each effectively distinct policy once: an infinite lifetime refreshes
nothing, so its refresh fractions share one run (issue 11, the study's speed)."""

from __future__ import annotations

import pandas as pd

from iiotsim.sim import Scenario, simulate, sweep
from iiotsim.sim.sweep import effective_scenario


def test_an_infinite_lifetime_gives_the_same_run_at_every_refresh_fraction() -> None:
    base = Scenario(fleet_size=200, duration_days=10, seed=5).replace(**{"token.lifetime": None})
    runs = [simulate(base.replace(**{"token.refresh_fraction": f})) for f in (0.25, 0.9)]
    pd.testing.assert_series_equal(runs[0].summary, runs[1].summary)
    pd.testing.assert_frame_equal(runs[0].timeline, runs[1].timeline)
    pd.testing.assert_frame_equal(runs[0].events, runs[1].events)
    assert effective_scenario(base.replace(**{"token.refresh_fraction": 0.25})) == (
        effective_scenario(base.replace(**{"token.refresh_fraction": 0.9}))
    )
    finite = base.replace(**{"token.lifetime": 3600.0, "token.refresh_fraction": 0.25})
    assert effective_scenario(finite) == finite


def test_the_sweep_copies_the_shared_run_into_each_row() -> None:
    base = Scenario(fleet_size=100, duration_days=5, seed=9)
    frame = sweep(
        base, repetitions=2, processes=1, progress=False,
        token__lifetime=[3600.0, None], token__refresh_fraction=[0.25, 0.75],
    )  # fmt: skip
    assert len(frame) == 8
    for (lifetime, fraction, repetition), row in frame.set_index(
        ["token.lifetime", "token.refresh_fraction", "repetition"]
    ).iterrows():
        scenario = base.replace(
            **{"token.lifetime": None if pd.isna(lifetime) else lifetime,
               "token.refresh_fraction": fraction},
            seed=base.seed + repetition,
        )  # fmt: skip
        expected = simulate(scenario).summary
        assert row["seed"] == scenario.seed
        assert row["lockouts"] == expected["lockouts"]
        assert row["refreshes_per_device_day"] == expected["refreshes_per_device_day"]
        assert row["rt_leak_exposure_mean_h"] == expected["rt_leak_exposure_mean_h"]
