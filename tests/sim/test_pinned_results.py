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
    "lockouts": 187.0,
    "lockouts_per_1000_device_days": 44.71360768921476,
    "permanent_lockouts": 0.0,
    "lockout_recovery_mean_h": 15.844060178391706,
    "lockout_recovery_p95_h": 30.342063802235046,
    "technician_approvals_per_day": 15.583333333333334,
    "unapproved_at_end": 0.0,
    "rt_leak_exposure_mean_h": 2.2871362743288874,
    "rt_leak_exposure_p95_h": 4.083333333435108,
    "rt_leak_exposure_samples": 1515.0,
    "rt_leak_exposure_mean_rse": 0.016946144212078535,
    "pt_leak_exposure_mean_h": float("inf"),
    "online_fraction": 0.8414768716501628,
    "refreshes_per_device_day": 5.402934114147041,
    "duplicate_id_connects_per_s": 0.02666666666666667,
    "messages_produced": 601894.0,
    "messages_delivered": 559017.0,
    "messages_lost": 32645.0,
    "message_latency_p50_s": 0.0,
    "message_latency_p99_s": 6510.217112409135,
    "peak_connect_per_s": 1.4676174407541445,
    "peak_refresh_per_s": 0.04595209528700939,
    "peak_register_per_s": 0.04595209528700939,
    "peak_provisioning_per_s": 21.918245051545615,
    "peak_twin_get_per_s": 0.08722222222222223,
    "peak_messages_per_s": 0.8748063445335377,
    "mean_connect_per_s": 0.10531792073509084,
    "mean_refresh_per_s": 0.026806153759782216,
    "mean_register_per_s": 0.026951794191880978,
    "mean_provisioning_per_s": 9.106271596718226,
    "mean_twin_get_per_s": 0.015555555555555557,
    "mean_messages_per_s": 0.5397111370336284,
}

FRAMES = {
    "events": ("778fd03ef2fb5f7f83ea9b6877714fed33b721921f01bd35e82d83df8635b698", 32719),
    "devices": ("12ab72433561d8b179742c46e9bee343355889fc47690c555f9e5785b23f2ebc", 400),
    "timeline": ("69fd16c16bdc0ca693d4b2c9d46f331f57beac2ff03e4d89405b08302fd37d4b", 288),
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
