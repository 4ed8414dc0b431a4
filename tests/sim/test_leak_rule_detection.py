"""The simulator's leak rules (``Leaks.detection_rules``): a thief online from the leak on
is caught at the device's first online instant (rule (a)), from the device's own
connectivity draws; checked against the closed form of alternating exponential periods."""

from __future__ import annotations

import pytest

from iiotsim.sim import (
    HOUR,
    Connectivity,
    Distribution,
    Leaks,
    Provisioning,
    Scenario,
    TokenPolicy,
    simulate,
)

RESPONSE = 600.0
LEAKS = 2000


def scenario(connectivity: Connectivity, **leaks: object) -> Scenario:
    return Scenario(
        fleet_size=200,
        duration_days=30,
        connectivity=connectivity,
        token=TokenPolicy(lifetime=None),  # nothing else ends a leaked token
        provisioning=Provisioning(
            technicians=10_000, approval_time=Distribution.fixed(1.0), working_hours=None
        ),
        leaks=Leaks(
            registration_tokens=LEAKS,
            detection_delay=Distribution.fixed(30 * 86400),
            exposure_relative_se=None,  # the leak events alone
            **leaks,  # type: ignore[arg-type]
        ),
        seed=13,
    )


ALWAYS_ONLINE = Connectivity(on=Distribution.fixed(1000 * 86400), off=Distribution.fixed(1.0))
INTERMITTENT = Connectivity(
    on=Distribution.exponential(6 * HOUR), off=Distribution.exponential(2 * HOUR)
)


def test_an_online_thief_meets_an_always_online_device_at_once() -> None:
    """The device is online at the leak: rule (a) fires then, and the exposure is the
    response delay exactly (the external detection is 30 days away)."""
    summary = simulate(scenario(ALWAYS_ONLINE, detection_rules=True, response_delay=RESPONSE))
    assert summary.summary["rt_leak_exposure_mean_h"] == pytest.approx(RESPONSE / HOUR)
    assert summary.summary["rt_leak_exposure_p95_h"] == pytest.approx(RESPONSE / HOUR)


def test_rules_shorten_an_intermittent_devices_exposure_but_not_a_stealthy_thiefs() -> None:
    """Online 6 h, offline 2 h (exponential): three leaks in four find the device online
    (exposure: the response delay), the rest wait for its next connection; a leak in the
    off period running at the end of the run is caught by the external detection only
    (the simulator does not draw past its horizon), so the mean stays well under the
    30 days without rules but above the response delay."""
    without = simulate(scenario(INTERMITTENT)).summary["rt_leak_exposure_mean_h"]
    caught = simulate(
        scenario(INTERMITTENT, detection_rules=True, response_delay=RESPONSE)
    ).summary["rt_leak_exposure_mean_h"]
    stealthy = simulate(scenario(INTERMITTENT, detection_rules=True, thief="stealthy")).summary[
        "rt_leak_exposure_mean_h"
    ]
    assert without == pytest.approx(30 * 24.0)
    assert stealthy == pytest.approx(without)
    assert RESPONSE / HOUR < caught < 0.01 * without
