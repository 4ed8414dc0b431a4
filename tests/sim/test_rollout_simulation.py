"""simulate_rollout against answers computed here, by hand or straight from draw_fleet's
segment arrays: stage admission times, each device's convergence instant, the halt."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from iiot_server.domain.convergence import rollout_order

from iiotsim.sim import (
    DAY,
    HOUR,
    Connectivity,
    Distribution,
    Scenario,
    ScenarioError,
    draw_fleet,
    rollout_devices,
    simulate_rollout,
)

KEY = "simulated-rollout"
PLAN = {
    "stages": [{"count": 5}, {"percent": 30}, {"percent": 100}],
    "advanceWhenConverged": 0.8,
    "haltWhenDrifted": 0.2,
}
SIZES = [5, 30, 65]  # of 100 devices: 5, then ceil(5 + 30) = 35 in all, then the rest

ALWAYS_ONLINE = Scenario(
    fleet_size=100,
    duration_days=1,
    start="fresh",  # every device online at t=0 ...
    connectivity=Connectivity(on=Distribution.fixed(100 * DAY)),  # ... and for 100 days
    seed=3,
)
INTERMITTENT = Scenario(
    fleet_size=200,
    duration_days=2,
    connectivity=Connectivity(
        on=Distribution.exponential(3 * HOUR), off=Distribution.exponential(2 * HOUR)
    ),
    seed=11,
)


def stages_by_hand(n: int, sizes: list[int]) -> dict[str, int]:
    names = [f"device-{d:05d}" for d in range(n)]
    order = rollout_order(KEY, names)
    stage_of, start = {}, 0
    for stage, size in enumerate(sizes):
        for name in order[start : start + size]:
            stage_of[name] = stage
        start += size
    return stage_of


def first_online_by_hand(times: np.ndarray, online: np.ndarray, at: float) -> float:
    for k in range(len(online)):
        if online[k] and times[k + 1] > times[k] and times[k + 1] > at:
            return max(at, float(times[k]))
    return math.inf


def test_always_online_fixed_delay_stages_follow_each_other_by_the_delay() -> None:
    delay = 300.0
    devices = rollout_devices(ALWAYS_ONLINE, PLAN, apply_delay=delay)
    assert dict(zip(devices["device"], devices["stage"], strict=True)) == stages_by_hand(100, SIZES)
    # stage 0 at t=0; all its devices converge at 300 s, so 100 % >= 80 % then: stage 1 is
    # admitted at 300 s, converges at 600 s; stage 2 at 600 s, converges at 900 s
    for stage, admitted_at in enumerate([0.0, 300.0, 600.0]):
        rows = devices[devices["stage"] == stage]
        assert (rows["admitted_at"] == admitted_at).all()
        assert (rows["converged_at"] == admitted_at + delay).all()
    assert devices["drifted_at"].isna().all()

    timeline = simulate_rollout(ALWAYS_ONLINE, PLAN, apply_delay=delay, resolution=60.0)
    expected = {  # seconds: (admitted, converged, stage, state)
        0.0: (5, 0, 0, "rolling"),
        240.0: (5, 0, 0, "rolling"),
        300.0: (35, 5, 1, "rolling"),
        540.0: (35, 5, 1, "rolling"),
        600.0: (100, 35, 2, "rolling"),
        840.0: (100, 35, 2, "rolling"),
        900.0: (100, 100, 2, "completed"),
        DAY: (100, 100, 2, "completed"),
    }
    for t, row in expected.items():
        got = timeline.loc[t]
        assert (got["admitted"], got["converged"], got["stage"], got["state"]) == row, t
    assert (timeline["pending"] == timeline["admitted"] - timeline["converged"]).all()


def test_always_online_random_delays_a_stage_opens_at_its_threshold_device() -> None:
    devices = rollout_devices(
        ALWAYS_ONLINE, PLAN, apply_delay=Distribution.exponential(600.0), seed=5
    )
    opened = 0.0
    for stage, size in enumerate(SIZES):
        rows = devices[devices["stage"] == stage]
        assert len(rows) == size
        assert (rows["admitted_at"] == opened).all()
        assert (rows["converged_at"] > opened).all()  # always online: at admission + delay
        if stage + 1 < len(SIZES):
            # the next opens when ceil(0.8 x size) of this one's devices have converged
            opened = float(np.sort(rows["converged_at"])[math.ceil(0.8 * size) - 1])


def test_intermittent_each_device_converges_at_its_first_online_instant() -> None:
    delay = 600.0
    fleet = draw_fleet(INTERMITTENT)
    devices = rollout_devices(INTERMITTENT, PLAN, apply_delay=delay)
    sizes = [5, 60, 135]  # of 200: 5, ceil(5 + 60) = 65 in all, the rest
    assert dict(zip(devices["device"], devices["stage"], strict=True)) == stages_by_hand(200, sizes)
    offline_at_admission = 0
    opened = 0.0
    for stage, size in enumerate(sizes):
        rows = devices[devices["stage"] == stage]
        assert (rows["admitted_at"] == opened).all()
        for d, name, converged_at in zip(
            rows.index.to_list(), rows["device"], rows["converged_at"], strict=True
        ):
            expected = first_online_by_hand(fleet.times[d], fleet.online[d], opened + delay)
            if math.isinf(expected):
                assert math.isnan(converged_at), name
            else:
                assert converged_at == expected, name
                offline_at_admission += expected > opened + delay
        if stage + 1 < len(sizes):
            opened = float(np.sort(rows["converged_at"])[math.ceil(0.8 * size) - 1])
    assert offline_at_admission > 10  # the connectivity did delay devices


def test_drift_above_the_threshold_halts_the_rollout() -> None:
    timeline = simulate_rollout(
        INTERMITTENT, PLAN, drift_probability=1.0, apply_delay=600.0, drift_delay=60.0
    )
    devices = rollout_devices(
        INTERMITTENT, PLAN, drift_probability=1.0, apply_delay=600.0, drift_delay=60.0
    )
    assert timeline["state"].iloc[-1] == "halted"
    stage = int(timeline["stage"].iloc[-1])
    assert stage < len(SIZES) - 1
    # the halt, found here: the first drift of the stage passing 20 % of its devices
    rows = devices[devices["stage"] == stage]
    drifts = np.sort(rows["drifted_at"].dropna())
    halted_at = float(drifts[math.floor(0.2 * len(rows))])
    assert (timeline.loc[timeline.index < halted_at, "state"] == "rolling").all()
    assert (timeline.loc[timeline.index >= halted_at, "state"] == "halted").all()
    # nobody is admitted after it, and nobody beyond the halted stage at all
    assert (
        timeline.loc[timeline.index >= halted_at, "admitted"] == devices["stage"].ge(0).sum()
    ).all()
    assert devices["stage"].max() == stage
    assert devices["admitted_at"].max() <= halted_at

    # without drift, the same fleet completes and every device converges
    calm = simulate_rollout(INTERMITTENT, PLAN, apply_delay=600.0, drift_delay=60.0)
    assert calm["state"].iloc[-1] == "completed"
    assert calm["admitted"].iloc[-1] == 200


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"drift_probability": 1.5}, "drift_probability"),
        ({"failure_probability": -0.1}, "failure_probability"),
        ({"plan": {"stages": [{"count": 1}], "pendingTimeout": -1}}, "plan.pendingTimeout"),
        ({"apply_delay": -1.0}, "apply_delay"),
        ({"resolution": 0.0}, "resolution"),
        ({"plan": {"stages": []}}, "plan.stages"),
    ],
)
def test_bad_input_names_the_field(options: dict[str, object], field: str) -> None:
    plan = options.pop("plan", PLAN)
    with pytest.raises(ScenarioError) as caught:
        simulate_rollout(ALWAYS_ONLINE, plan, **options)  # type: ignore[arg-type]
    assert caught.value.field == field


def row(table: pd.DataFrame, t: float, columns: list[str]) -> list[object]:
    return [table.at[t, c] for c in columns]


def test_devices_that_never_answer_time_out_and_the_stage_is_judged_then() -> None:
    """Nobody applies the change within the day: with ``pendingTimeout`` 600 s each stage's
    devices time out 600 s after it opened; the strict plan halts then, the lenient one
    (every device may fail) leaves them behind and opens the next stage."""
    plan = {**PLAN, "pendingTimeout": 600}
    del plan["haltWhenDrifted"]
    never = 10 * DAY  # apply_delay: beyond the day simulated

    def run(halt: float) -> pd.DataFrame:
        return simulate_rollout(
            ALWAYS_ONLINE, {**plan, "haltWhenDriftedOrFailed": halt}, apply_delay=never
        )

    columns = ["admitted", "pending", "timed_out", "stage", "state"]
    strict = run(0.2)
    assert row(strict, 540.0, columns) == [5, 5, 0, 0, "rolling"]
    assert row(strict, 600.0, columns) == [5, 5, 5, 0, "halted"]
    assert strict["state"].iloc[-1] == "halted"

    lenient = run(1.0)
    assert [row(lenient, t, columns) for t in (540.0, 600.0, 1200.0, 1800.0)] == [
        [5, 5, 0, 0, "rolling"],
        [35, 35, 5, 1, "rolling"],  # stage 1 opens as stage 0 times out
        [100, 100, 35, 2, "rolling"],
        [100, 100, 100, 2, "completed"],
    ]


def test_failures_count_against_the_halt_threshold() -> None:
    """Every device refuses at its first online instant 60 s after admission: the second
    failure of stage 0 (2 of 5 > 0.2) halts the rollout at 60 s."""
    timeline = simulate_rollout(ALWAYS_ONLINE, PLAN, failure_probability=1.0, apply_delay=60.0)
    devices = rollout_devices(ALWAYS_ONLINE, PLAN, failure_probability=1.0, apply_delay=60.0)
    columns = ["admitted", "pending", "converged", "failed", "stage", "state"]
    assert row(timeline, 0.0, columns) == [5, 5, 0, 0, 0, "rolling"]
    assert row(timeline, 60.0, columns) == [5, 0, 0, 5, 0, "halted"]
    failed_at = devices["failed_at"].dropna()
    assert len(failed_at) == 5 and (failed_at == 60.0).all()
    assert devices["converged_at"].isna().all()
    # none refuse: the same run completes, as without the option
    calm = simulate_rollout(ALWAYS_ONLINE, PLAN, failure_probability=0.0, apply_delay=60.0)
    assert calm.equals(simulate_rollout(ALWAYS_ONLINE, PLAN, apply_delay=60.0))
    assert calm["state"].iloc[-1] == "completed"
