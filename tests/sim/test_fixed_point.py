"""The fleet/technician-queue fixed point (issue 11, item 6): a replayed lockout is not
queued behind itself, so the passes settle where the queue is close to saturation."""

from __future__ import annotations

import numpy as np

from iiotsim.sim import Provisioning, simulate
from iiotsim.sim.model import FIXED_POINT_MAX_PASSES
from iiotsim.sim.technicians import queue_state

from .test_pinned_results import SCENARIO


def test_a_request_in_the_queue_does_not_wait_for_its_own_handling() -> None:
    one = Provisioning(technicians=1, working_hours=None)
    state = queue_state(np.array([0.0, 100.0]), np.array([50.0, 50.0]), one)
    # the technician is free from 50 s: the queue's second request (at 100 s) starts at
    # once, as the queue itself says; before, its delay was its own 50 s. One arriving
    # at 120 s waits for it (until 150 s)
    assert state.done.tolist() == [50.0, 150.0]
    assert state.delay(np.array([100.0, 120.0, 0.0, 10.0])).tolist() == [0.0, 30.0, 0.0, 40.0]


def test_near_saturation_the_fixed_point_settles() -> None:
    """The pinned scenario: 16 requests a day for ~18 a day of working-hours capacity
    (one technician, 30 min per approval); it never settled in 20 passes before."""
    s = simulate(SCENARIO).summary
    assert s["fixed_point_converged"]
    assert s["fixed_point_passes"] < FIXED_POINT_MAX_PASSES
    assert s["unapproved_at_end"] > 0  # the queue is long at the end: near saturation
