"""Writes that read, decide and write back stay right when requests arrive together. On
SQLite the platform runs one transaction at a time; on PostgreSQL units of work run on
several threads at once, so these decisions need row locks (issue 14)."""

from __future__ import annotations

import threading

import httpx
import pytest

from iiotsim.platform import Platform

from .device_calls import refresh, register
from .test_http_flow import provision

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

SIMULTANEOUS = 16  # under the per-token refresh limit (burst 20)
ROUNDS = 5


@pytest.mark.parametrize("device_id", [f"race-{n:02d}" for n in range(ROUNDS)])
def test_simultaneous_refreshes_of_one_token_leave_one_usable_child(
    platform: Platform, http: httpx.Client, device_id: str
) -> None:
    """Each refresh of an already-refreshed token counts as a retry after a lost answer and
    revokes the child issued before it, so however the requests interleave exactly one of
    the new tokens registers. (Without the row lock, PostgreSQL left 2+ usable in about a
    third of the runs: hence several rounds.)"""
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    parent = provision(platform, http, pt, deviceId=device_id)
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
    assert len(children) == SIMULTANEOUS
    usable = [rt for rt in children if register(http, rt).status_code == 200]
    assert len(usable) == 1
