"""A Registration Token that cannot be used is a 401 at register and at refresh, as
Spotflow's SDK reads it (it provisions again on a 401 only; on a 403 it retried the dead
token every 5 s forever, issue 13), and every 401 names the scheme the route asks for."""

from __future__ import annotations

import httpx
import pytest

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from .device_calls import dt, refresh, register
from .test_http_flow import provision

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

PROBLEM = "application/problem+json"


def assert_device_401(response: httpx.Response, problem_type: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["www-authenticate"] == "DeviceToken"
    assert response.json()["type"] == problem_type
    assert response.json()["field"] == "registrationToken"


@pytest.fixture
def pt(platform: Platform) -> str:
    return platform.admin.create_provisioning_token(
        "refusals", max_registration_token_lifetime=3600
    ).provisioning_token


def test_revoked_token(platform: Platform, http: httpx.Client, pt: str) -> None:
    rt = provision(platform, http, pt, deviceId="refused-01")
    platform.admin.revoke_device("refused-01")
    assert_device_401(register(http, rt), "/problems/registrationTokenRevoked")
    assert_device_401(refresh(http, pt, rt), "/problems/registrationTokenRevoked")


def test_expired_token(platform: Platform, http: httpx.Client, pt: str, clock: ManualClock) -> None:
    rt = provision(platform, http, pt, deviceId="refused-02")
    clock.advance(3601)
    assert_device_401(register(http, rt), "/problems/registrationTokenExpired")
    assert_device_401(refresh(http, pt, rt), "/problems/registrationTokenExpired")


def test_unknown_token(http: httpx.Client, pt: str) -> None:
    never_issued = "rt_" + "x" * 43
    assert_device_401(register(http, never_issued), "/problems/registrationTokenUnknown")
    assert_device_401(refresh(http, pt, never_issued), "/problems/registrationTokenUnknown")


def test_token_replaced_by_a_refresh_after_its_grace(
    platform: Platform, http: httpx.Client, pt: str, clock: ManualClock
) -> None:
    parent = provision(platform, http, pt, deviceId="refused-03")
    assert refresh(http, pt, parent).status_code == 201
    clock.advance(platform.settings.refresh_grace_period + 1)
    assert_device_401(register(http, parent), "/problems/registrationTokenRevoked")


def test_token_of_a_deleted_device(platform: Platform, http: httpx.Client, pt: str) -> None:
    rt = provision(platform, http, pt, deviceId="refused-04")
    platform.admin.delete_device("refused-04")
    assert register(http, rt).status_code == 401


def test_another_provisioning_tokens_registration_token_stays_403(
    platform: Platform, http: httpx.Client, pt: str
) -> None:
    """The RT is fine, the PT presenting it may not refresh it: a 403, not a reason to
    provision again."""
    other = platform.admin.create_provisioning_token("other").provisioning_token
    rt = provision(platform, http, other, deviceId="refused-05")
    response = refresh(http, pt, rt)
    assert response.status_code == 403
    assert "www-authenticate" not in response.headers


def test_401_names_the_scheme_of_the_route(platform: Platform, http: httpx.Client) -> None:
    device_routes = [
        http.put("/devices/register"),
        http.post("/provisioning-operations/init", json={}, headers=dt("pt_unknown")),
        http.put("/devices/register", headers={"Authorization": "Bearer rt_wrong-scheme"}),
    ]
    for response in device_routes:
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "DeviceToken", response.request.url
    admin_routes = [
        http.get("/api/v1/devices"),
        http.get("/api/v1/devices", headers={"Authorization": "Bearer ak_unknown"}),
    ]
    for response in admin_routes:
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
