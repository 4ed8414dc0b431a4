"""Writes that read, decide and write back stay right when requests arrive together. On
SQLite the platform runs one transaction at a time; on PostgreSQL units of work run on
several threads at once, so these decisions need row locks (issue 14)."""

from __future__ import annotations

import threading

import httpx
import pytest

from iiotsim.platform import Platform

from ..integration.mqtt import Device, wait_for
from ..integration.mqtt import provision as provision_over_mqtt
from .device_calls import complete, init, refresh, register
from .test_http_flow import provision

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

SIMULTANEOUS = 16  # under the per-token refresh limit (burst 20)
ROUNDS = 5


def test_simultaneous_refreshes_of_one_token_leave_one_usable_child(
    platform: Platform, http: httpx.Client
) -> None:
    """Each refresh of an already-refreshed token counts as a retry after a lost answer and
    revokes the child issued before it, so however the requests interleave exactly one of
    the new tokens registers. (Without the row lock, PostgreSQL left 2+ usable in about a
    third of the runs: hence several rounds.)"""
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    for round_ in range(ROUNDS):
        parent = provision(platform, http, pt, deviceId=f"race-{round_:02d}")
        children = refresh_all_at_once(platform, pt, parent)
        assert len(children) == SIMULTANEOUS
        usable = [rt for rt in children if register(http, rt).status_code == 200]
        assert len(usable) == 1, f"round {round_}"


def refresh_all_at_once(platform: Platform, pt: str, parent: str) -> list[str]:
    start = threading.Barrier(SIMULTANEOUS)
    children: list[str] = []

    def refresh_once() -> None:
        with httpx.Client(base_url=platform.http_url, timeout=30) as own:
            start.wait()
            answer = refresh(own, pt, parent)
            assert answer.status_code == 201, answer.text
            children.append(answer.json()["registrationToken"])

    threads = [threading.Thread(target=refresh_once) for _ in range(SIMULTANEOUS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return children


def test_simultaneous_completions_of_one_operation_issue_one_token(
    platform: Platform, http: httpx.Client
) -> None:
    """Completing a completed operation issues the token again and revokes the earlier
    one (a device whose answer was lost polls again), so of simultaneous completions each
    answers a token and exactly one of them works. (Passed on PostgreSQL without the
    operation's row lock too: the UPDATE of the operation row queues the second already.)"""
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    op = init(http, pt, deviceId="once-01").json()
    platform.admin.approve_operation(op["verificationCode"])
    start = threading.Barrier(SIMULTANEOUS)
    answers: list[httpx.Response] = []

    def complete_once() -> None:
        with httpx.Client(base_url=platform.http_url, timeout=30) as own:
            start.wait()
            answers.append(complete(own, pt, op["provisioningOperationId"]))

    threads = [threading.Thread(target=complete_once) for _ in range(SIMULTANEOUS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == SIMULTANEOUS
    assert [a.status_code for a in answers] == [200] * SIMULTANEOUS, answers[0].text
    issued = [a.json()["registrationToken"] for a in answers]
    assert len([rt for rt in issued if register(http, rt).status_code == 200]) == 1


def test_reported_patches_apply_in_the_order_sent(platform: Platform) -> None:
    """Patches a device sends back to back over MQTT merge in that order: the last value of
    a key wins (on PostgreSQL's threads the last write was often an earlier patch's)."""
    reg = provision_over_mqtt(platform, "order-01")
    device = Device(platform, reg.device_id, reg.password)
    assert device.connect() == 0
    try:
        sent = [
            device.client.publish(
                f"devices/{reg.device_id}/twin/reported", f'{{"n": {i}, "k{i}": {i}}}', qos=1
            )
            for i in range(SIMULTANEOUS)
        ]
        for info in sent:
            info.wait_for_publish(10)
        last = SIMULTANEOUS - 1
        assert wait_for(
            lambda: (
                len(platform.admin.get_twin(reg.device_id).reported.properties) == SIMULTANEOUS + 1
            )
        )
        assert platform.admin.get_twin(reg.device_id).reported.properties["n"] == last
    finally:
        device.close()


def test_simultaneous_approvals_for_one_device_id_approve_one(
    platform: Platform, http: httpx.Client
) -> None:
    """Two technicians approve two operations of one Device ID at once: one is approved,
    the other finds its operation cancelled by that approval (409), as when they approve
    one after the other. Without the ordered locks PostgreSQL aborted one with a deadlock
    (HTTP 500) in about one round of ten: hence ten rounds."""
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    for round_ in range(10):
        device_id = f"dup-{round_:02d}"
        operations = [init(http, pt, deviceId=device_id).json() for _ in range(2)]
        statuses = approve_all_at_once(
            platform, [op["provisioningOperationId"] for op in operations]
        )
        assert sorted(statuses) == [200, 409], f"round {round_}"
        states = sorted(
            o.state for o in platform.admin.list_operations() if o.device_id == device_id
        )
        assert states == ["approved", "cancelled"]


def approve_all_at_once(platform: Platform, operation_ids: list[str]) -> list[int]:
    start = threading.Barrier(len(operation_ids))
    statuses: list[int] = []
    admin = {"Authorization": f"Bearer {platform.admin_key}"}

    def approve(operation_id: str) -> None:
        with httpx.Client(base_url=platform.http_url, timeout=30, headers=admin) as own:
            start.wait()
            path = f"/api/v1/provisioning-operations/{operation_id}/approve"
            statuses.append(own.post(path).status_code)

    threads = [threading.Thread(target=approve, args=(i,)) for i in operation_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses
