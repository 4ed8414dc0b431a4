"""The fleet is processed in chunks of whole device blocks (issue 11, speed: 100,000
devices x 365 days under 2 GiB). Each block draws from its own generators, so the
chunk size changes nothing but memory: events, devices and every summary figure are
bit-identical; the timeline's bins add the chunks' contributions in another order, so
they (and the peak/mean request rates read from them) agree to float rounding.

Blocks are made small here (100 devices) so a test-sized fleet spans several."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iiotsim.sim import (
    Scenario,
    SimulationResult,
    draw_fleet,
    model,
)

from .test_pinned_results import SCENARIO as PINNED

# every random stream is drawn (test_pinned_results' scenario), over 4 blocks (the last
# partial); deployed at t = 0, so every block starts at once
SCENARIO = PINNED.replace(fleet_size=350, duration_days=10, deployment_days=0)
TIMELINE_FIGURES = [f"{w}_{k}_per_s" for w in ("peak", "mean") for k in model.REQUEST_KINDS]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model, "DEVICE_BLOCK", 100)
    monkeypatch.setattr(model, "_last_fleet", {})


def run(scenario: Scenario, chunk_devices: int) -> SimulationResult:
    model._last_fleet.clear()  # draw the fleet afresh
    return model.simulate(scenario, chunk_devices=chunk_devices)


def assert_same(a: SimulationResult, b: SimulationResult) -> None:
    pd.testing.assert_frame_equal(a.events, b.events, check_exact=True)
    pd.testing.assert_frame_equal(a.devices, b.devices, check_exact=True)
    exact = [k for k in a.summary.index if k not in TIMELINE_FIGURES]
    pd.testing.assert_series_equal(a.summary[exact], b.summary[exact], check_exact=True)
    pd.testing.assert_series_equal(
        a.summary[TIMELINE_FIGURES], b.summary[TIMELINE_FIGURES], rtol=1e-12
    )
    pd.testing.assert_frame_equal(a.timeline, b.timeline, rtol=1e-12)


def test_a_fleet_in_small_chunks_equals_the_same_fleet_in_one_chunk() -> None:
    one = run(SCENARIO, chunk_devices=10**6)
    assert model._last_fleet  # one fleet drawn...
    (segments,) = model._last_fleet.values()
    assert segments.plan.blocks() == 4  # ...of 4 blocks
    assert one.summary["lockouts"] > 50 and one.summary["fixed_point_passes"] > 1
    assert one.summary["messages_lost"] > 0 and one.summary["permanent_lockouts"] >= 0
    assert_same(run(SCENARIO, chunk_devices=100), one)
    assert_same(run(SCENARIO, chunk_devices=250), one)  # rounded up to 3 blocks, then 1


def test_blocks_drawn_again_for_every_pass_give_the_kept_blocks_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fleet too large to keep (100,000 devices) is drawn again, block by block, for
    each pass of the fixed point: its generators restart, so every pass sees one fleet."""
    kept = run(SCENARIO, chunk_devices=100)
    monkeypatch.setattr(model, "FLEET_CACHE_BYTES", 0)
    redrawn = run(SCENARIO, chunk_devices=100)
    (segments,) = model._last_fleet.values()
    assert not segments.kept
    assert redrawn.summary["fixed_point_passes"] > 1
    assert_same(redrawn, kept)


def test_draw_fleet_over_blocks_is_the_connectivity_simulate_reports() -> None:
    fleet = draw_fleet(SCENARIO)
    times, online = fleet.times[:, :-1], fleet.online
    before = np.concatenate([fleet.start_online[:, None], online[:, :-1]], axis=1)
    live = fleet.times[:, 1:] > times
    d, k = np.nonzero(online & ~before & live)
    drawn = sorted(zip(times[d, k].tolist(), d.tolist(), strict=True))
    events = run(SCENARIO, chunk_devices=100).events
    reported = events[events["kind"] == "reconnect"]
    assert len(drawn) > 1000
    assert drawn == sorted(zip(reported["time"].tolist(), reported["device"].tolist(), strict=True))
    # blocks draw from different generators: no two blocks' first columns alike
    assert len({round(float(fleet.times[b * 100, 1]), 6) for b in range(4)}) == 4
