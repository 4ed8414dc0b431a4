"""Revocation is one switch (issue 10, item 3): after an admin revokes or deletes a device,
repeating ``PUT /provisioning-operations/complete`` with the Provisioning Token (which
re-issues a Registration Token for a completed operation until it expires, for devices
whose response was lost) answers 410 and yields no token, at any point of the
operation's lifetime. The device must provision again, through a technician."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from ..server.device_calls import complete, dt, init, register

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

# seconds after completion: at once, 1 minute, 14 minutes, 14:59 (lifetime is 15 min)
OFFSETS = [0.0, 60.0, 14 * 60.0, 14 * 60.0 + 59.0]


def end_device(platform: Platform, action: str, device_id: str) -> None:
    if action == "revoke":
        platform.admin.revoke_device(device_id)
    else:
        platform.admin.delete_device(device_id)


@pytest.mark.parametrize("action", ["revoke", "delete"])
def test_a_completed_operation_yields_no_token_after_revocation(
    platform: Platform, http: httpx.Client, clock: ManualClock, action: str
) -> None:
    for index, offset in enumerate(OFFSETS):
        device_id = f"revoked-{action}-{index}"
        pt = platform.admin.create_provisioning_token("t").provisioning_token
        op_id = init(http, pt, deviceId=device_id).json()["provisioningOperationId"]
        platform.admin.approve_operation(op_id)
        first = complete(http, pt, op_id)
        assert first.status_code == 200
        assert register(http, first.json()["registrationToken"]).status_code == 200
        start = clock.now()
        clock.advance(offset)
        end_device(platform, action, device_id)
        again = complete(http, pt, op_id)
        assert again.status_code == 410, (offset, again.status_code, again.text)
        assert "registrationToken" not in again.text
        assert again.json()["type"].endswith("provisioningOperationCancelled")
        status = http.get(f"/provisioning-operations/{op_id}", headers=dt(pt)).json()
        assert status["state"] == "cancelled"
        clock.advance(0.5)  # and it stays closed
        assert complete(http, pt, op_id).status_code == 410
        assert clock.now() - start < timedelta(minutes=15)  # all inside the op's lifetime


@pytest.mark.parametrize("action", ["revoke", "delete"])
def test_an_approved_operation_not_yet_completed_is_closed_too(
    platform: Platform, http: httpx.Client, clock: ManualClock, action: str
) -> None:
    device_id = f"reprov-{action}-01"
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    first_op = init(http, pt, deviceId=device_id).json()["provisioningOperationId"]
    platform.admin.approve_operation(first_op)
    assert complete(http, pt, first_op).status_code == 200
    second_op = init(http, pt, deviceId=device_id).json()["provisioningOperationId"]
    pending_op = init(http, pt, deviceId=device_id).json()["provisioningOperationId"]
    platform.admin.approve_operation(second_op)  # cancels pending_op (same Device ID)
    clock.advance(120)
    end_device(platform, action, device_id)
    assert complete(http, pt, second_op).status_code == 410
    assert complete(http, pt, pending_op).status_code == 410


def test_the_device_can_provision_again_through_a_technician(
    platform: Platform, http: httpx.Client
) -> None:
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    op_id = init(http, pt, deviceId="again-0001").json()["provisioningOperationId"]
    platform.admin.approve_operation(op_id)
    assert complete(http, pt, op_id).status_code == 200
    platform.admin.revoke_device("again-0001")
    new_op = init(http, pt, deviceId="again-0001").json()["provisioningOperationId"]
    assert complete(http, pt, new_op).status_code == 202  # waits for the technician
    platform.admin.approve_operation(new_op)
    issued = complete(http, pt, new_op)
    assert issued.status_code == 200
    assert register(http, issued.json()["registrationToken"]).status_code == 200
