"""One scenario's results pinned to the bit: refactors of the simulator's internals must
not change what a seed gives (every random stream is drawn here: deployment, own
connectivity per group, random site outages and their storms, RT and PT leaks, the
replay, both technician queues and the messages).

If a deliberate model change (or a numpy release that changes its generators) moves
these figures, regenerate them with the snippet in :func:`_observed` and say why in the
commit.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from iiotsim.sim import (
    DAY,
    HOUR,
    Connectivity,
    DeviceGroup,
    Distribution,
    Leaks,
    Messages,
    Outage,
    Outages,
    Pitfalls,
    Provisioning,
    Scenario,
    SimulationResult,
    TokenPolicy,
    simulate,
)

SCENARIO = Scenario(
    fleet_size=400,
    duration_days=12,
    deployment_days=3,
    groups=(
        DeviceGroup("north", 2.0),
        DeviceGroup(
            "south",
            1.0,
            Connectivity(off=Distribution.lognormal(2 * HOUR, 1.0), diurnal_amplitude=0.5),
        ),
    ),
    token=TokenPolicy(lifetime=8 * HOUR, shared_provisioning_token=False),
    provisioning=Provisioning(technicians=1, approval_time=Distribution.exponential(30 * 60)),
    messages=Messages(rate_per_hour=6, outbox_capacity=20),
    leaks=Leaks(registration_tokens=15, provisioning_tokens=3, detection_probability=0.7),
    outages=Outages(
        scheduled=(Outage(5 * DAY, 2 * HOUR, "south"),), random_per_day=0.5, random_scope="site"
    ),
    pitfalls=Pitfalls(duplicate_id_pairs=2),
    seed=2026,
)

SUMMARY = {
    "devices": 400.0,
    "device_days": 4182.172042563806,
    "lockouts": 192.0,
    "lockouts_per_1000_device_days": 45.90915869694778,
    "permanent_lockouts": 0.0,
    "lockout_recovery_mean_h": 24.040363045904023,
    "lockout_recovery_p95_h": 50.68154993542176,
    "technician_requests_per_day": 16.0,
    "technician_approvals_per_day": 13.583333333333334,
    "unapproved_at_end": 29.0,
    "fixed_point_passes": 10.0,
    "fixed_point_converged": 1.0,
    "rt_leak_exposure_mean_h": 2.278548376702548,
    "rt_leak_exposure_p95_h": 4.083333333435108,
    "rt_leak_exposure_samples": 1515.0,
    "rt_leak_exposure_mean_rse": 0.017059589015976487,
    "pt_leak_exposure_mean_h": float("inf"),
    "online_fraction": 0.8454095873834944,
    "refreshes_per_device_day": 5.429714456720261,
    "duplicate_id_connects_per_s": 0.02666666666666667,
    "messages_produced": 601894.0,
    "messages_delivered": 562489.0,
    "messages_lost": 32318.0,
    "message_latency_p50_s": 0.0,
    "message_latency_p99_s": 6721.598510167662,
    "peak_connect_per_s": 1.459760989227705,
    "peak_refresh_per_s": 0.04115492153061468,
    "peak_register_per_s": 0.04115492153061468,
    "peak_provisioning_per_s": 23.03128014935213,
    "peak_twin_get_per_s": 0.08722222222222223,
    "peak_messages_per_s": 0.9033633883558523,
    "mean_connect_per_s": 0.10041377314814776,
    "mean_refresh_per_s": 0.02190200617283912,
    "mean_register_per_s": 0.022059220679011962,
    "mean_provisioning_per_s": 8.108743958872013,
    "mean_twin_get_per_s": 0.015555555555555557,
    "mean_messages_per_s": 0.5430047679981767,
}

FRAMES = {
    "events": ("156c052acca367111168c57e4e3397b9a268abee51f780ac07d1f04eee99d3d2", 32703),
    "devices": ("9c5497b6d950994814a58cceaa892f9a8210a34fe0260295c746adf88bf6ef12", 400),
    "timeline": ("bfe1e5273f18c15f20ccc2fb39f42510a755cc523e4d638fe304ccd346676258", 288),
}


def _digest(frame: pd.DataFrame) -> str:
    return hashlib.sha256(
        pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes()
    ).hexdigest()


def _observed(result: SimulationResult) -> tuple[dict[str, float], dict[str, tuple[str, int]]]:
    """``print(*_observed(simulate(SCENARIO)), sep="\\n")`` regenerates the pins."""
    summary = {str(k): float(v) for k, v in result.summary.items()}
    frames = {
        name: (_digest(getattr(result, name)), len(getattr(result, name)))
        for name in ("events", "devices", "timeline")
    }
    return summary, frames


def test_a_fixed_seed_gives_the_pinned_results_bit_for_bit() -> None:
    summary, frames = _observed(simulate(SCENARIO))
    assert summary == SUMMARY  # exact: no tolerance
    assert frames == FRAMES
