"""Issue 2's flows over real HTTP against a running server, time moved by a ManualClock."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from iiotsim.clock import ManualClock
from iiotsim.errors import PlatformError
from iiotsim.platform import Platform

from .device_calls import complete, dt, init, refresh, register

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

PROBLEM = "application/problem+json"


def provision(platform: Platform, http: httpx.Client, pt: str, **init_body: object) -> str:
    """init → approve → complete; returns the Registration Token."""
    op = init(http, pt, **init_body).json()
    platform.admin.approve_operation(op["verificationCode"])
    return str(complete(http, pt, op["provisioningOperationId"]).json()["registrationToken"])


def test_full_provisioning_flow(platform: Platform, http: httpx.Client) -> None:
    admin = platform.admin
    pt = admin.create_provisioning_token("line 1").provisioning_token
    assert pt.startswith("pt_")

    started = init(http, pt, deviceId="pump-0001", attributes={"serial": "SN-1"})
    assert started.status_code == 200
    op = started.json()
    assert set(op) >= {"provisioningOperationId", "verificationCode", "expirationTime"}

    pending = complete(http, pt, op["provisioningOperationId"])
    assert pending.status_code == 202
    assert int(pending.headers["Retry-After"]) >= 1

    listed = admin.list_operations(state="pending")
    assert [o.verification_code for o in listed] == [op["verificationCode"]]
    assert listed[0].attributes == {"serial": "SN-1"}
    assert listed[0].device_id == "pump-0001"

    approved = admin.approve_operation(op["verificationCode"].lower())
    assert approved.state == "approved"

    done = complete(http, pt, op["provisioningOperationId"])
    assert done.status_code == 200
    rt1 = done.json()["registrationToken"]
    assert rt1.startswith("rt_")
    assert done.json()["deviceId"] == "pump-0001"

    reg = register(http, rt1)
    assert reg.status_code == 200
    body = reg.json()
    assert body["deviceId"] == body["mqttClientId"] == body["mqttUsername"] == "pump-0001"
    assert body["mqttPassword"].startswith("mp_")
    assert rt1 not in reg.text  # the RT itself never goes to the broker

    first = refresh(http, pt, rt1)
    assert first.status_code == 201
    rt2 = first.json()["registrationToken"]
    second = refresh(http, pt, rt2)
    assert second.status_code == 201
    rt3 = second.json()["registrationToken"]

    # rt1 is now the grandparent: revoked at once
    grandparent = refresh(http, pt, rt1)
    assert grandparent.status_code == 401
    assert grandparent.json()["type"] == "/problems/registrationTokenRevoked"
    assert register(http, rt1).status_code == 401
    assert register(http, rt2).status_code == 200  # parent: still in its grace period
    assert register(http, rt3).status_code == 200

    revoked = admin.revoke_device("pump-0001")
    assert revoked.revoked_tokens >= 2
    refused = register(http, rt3)
    assert refused.status_code == 401
    assert refused.json()["type"] == "/problems/registrationTokenRevoked"
    assert refused.headers["content-type"].startswith(PROBLEM)
    assert admin.get_device("pump-0001").registration_token_status is None


def test_completing_again_reissues_and_invalidates_earlier(
    platform: Platform, http: httpx.Client
) -> None:
    pt = platform.admin.create_provisioning_token("t", device_id="valve-01").provisioning_token
    op = init(http, pt).json()
    platform.admin.approve_operation(op["provisioningOperationId"])
    first = complete(http, pt, op["provisioningOperationId"]).json()["registrationToken"]
    second = complete(http, pt, op["provisioningOperationId"]).json()["registrationToken"]
    assert first != second
    assert register(http, first).status_code == 401
    assert register(http, second).status_code == 200


def test_operation_expires_with_the_clock(
    platform: Platform, http: httpx.Client, clock: ManualClock
) -> None:
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    op = init(http, pt, deviceId="sensor-01").json()
    clock.advance(platform.settings.operation_lifetime)
    closed = complete(http, pt, op["provisioningOperationId"])
    assert closed.status_code == 410
    assert closed.json()["type"] == "/problems/deviceProvisioning/provisioningOperationExpired"
    cancelled = platform.admin.list_operations(state="cancelled")
    assert [(o.id, o.cancel_reason) for o in cancelled] == [
        (op["provisioningOperationId"], "expired")
    ]
    assert platform.admin.list_operations(state="pending") == []
    with pytest.raises(PlatformError) as err:
        platform.admin.approve_operation(op["provisioningOperationId"])
    assert err.value.status == 409


def test_technician_cancel_closes_the_operation(platform: Platform, http: httpx.Client) -> None:
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    op = init(http, pt, deviceId="sensor-02").json()
    platform.admin.cancel_operation(op["verificationCode"])
    closed = complete(http, pt, op["provisioningOperationId"])
    assert closed.status_code == 410
    assert closed.json()["type"] == "/problems/deviceProvisioning/provisioningOperationCancelled"


def test_approving_one_cancels_the_other_with_the_same_device_id(
    platform: Platform, http: httpx.Client
) -> None:
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    a = init(http, pt, deviceId="twin-01").json()
    b = init(http, pt, deviceId="twin-01").json()
    c = init(http, pt, deviceId="other-01").json()
    platform.admin.approve_operation(a["provisioningOperationId"])
    by_id = {o.id: o for o in platform.admin.list_operations()}
    assert by_id[b["provisioningOperationId"]].state == "cancelled"
    assert by_id[b["provisioningOperationId"]].cancel_reason == "superseded"
    assert by_id[c["provisioningOperationId"]].state == "pending"
    assert complete(http, pt, b["provisioningOperationId"]).status_code == 410


def test_registration_token_expiry_and_refresh_point(
    platform: Platform, http: httpx.Client, clock: ManualClock
) -> None:
    pt = platform.admin.create_provisioning_token(
        "t", max_registration_token_lifetime=3600
    ).provisioning_token
    rt = provision(platform, http, pt, deviceId="meter-01")
    body = register(http, rt).json()
    assert body["registrationTokenLifetime"] == pytest.approx(3600)
    assert body["refreshAfter"] == pytest.approx(1800)
    clock.advance(1000)
    assert register(http, rt).json()["refreshAfter"] == pytest.approx(800)
    clock.advance(2600)
    expired = register(http, rt)
    assert expired.status_code == 401
    assert expired.json()["type"] == "/problems/registrationTokenExpired"
    assert refresh(http, pt, rt).status_code == 401


def test_refreshed_parent_works_only_during_grace(
    platform: Platform, http: httpx.Client, clock: ManualClock
) -> None:
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    parent = provision(platform, http, pt, deviceId="meter-02")
    child = refresh(http, pt, parent).json()["registrationToken"]
    clock.advance(platform.settings.refresh_grace_period - 1)
    assert register(http, parent).status_code == 200
    clock.advance(1)
    assert register(http, parent).status_code == 401
    assert register(http, child).status_code == 200


def test_lost_refresh_response_can_be_retried(platform: Platform, http: httpx.Client) -> None:
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    parent = provision(platform, http, pt, deviceId="meter-03")
    lost = refresh(http, pt, parent).json()["registrationToken"]  # the device never saw it
    retried = refresh(http, pt, parent)
    assert retried.status_code == 201
    assert register(http, retried.json()["registrationToken"]).status_code == 200
    assert register(http, lost).status_code == 401


def test_restart_keeps_tokens_operations_and_devices(
    tmp_path: Path, clock: ManualClock, database_url: str | None
) -> None:
    data = tmp_path / "kept"
    with (
        Platform(
            data_dir=data,
            clock=clock,
            admin_key="ak_restart-test-key",
            database_url=database_url,
        ) as first,
        httpx.Client(base_url=first.http_url) as http,
    ):
        pt = first.admin.create_provisioning_token("t").provisioning_token
        rt = provision(first, http, pt, deviceId="keep-01")
        pending = init(http, pt, deviceId="keep-02").json()
    with (
        Platform(
            data_dir=data,
            clock=clock,
            admin_key="ak_restart-test-key",
            database_url=database_url,
        ) as second,
        httpx.Client(base_url=second.http_url) as http,
    ):
        assert register(http, rt).status_code == 200
        assert [d.device_id for d in second.admin.list_devices()] == ["keep-01"]
        ops = second.admin.list_operations(state="pending")
        assert [o.id for o in ops] == [pending["provisioningOperationId"]]
        assert init(http, pt, deviceId="keep-03").status_code == 200


def test_wrong_realm_and_foreign_tokens_are_refused(platform: Platform, http: httpx.Client) -> None:
    admin = platform.admin
    pt_a = admin.create_provisioning_token("a", device_id="dev-a1").provisioning_token
    pt_b = admin.create_provisioning_token("b", device_id="dev-b1").provisioning_token
    rt_a = provision(platform, http, pt_a)
    rt_b = provision(platform, http, pt_b)

    # another device's RT under my PT
    foreign = refresh(http, pt_a, rt_b)
    assert foreign.status_code == 403
    assert foreign.json()["field"] == "registrationToken"
    # secrets of the wrong kind in each realm
    assert init(http, rt_a).status_code == 401
    assert register(http, pt_a).status_code == 401
    assert init(http, platform.admin_key).status_code == 401
    bearer_pt = http.get("/api/v1/devices", headers={"Authorization": f"Bearer {pt_a}"})
    assert bearer_pt.status_code == 401
    assert http.get("/api/v1/devices", headers=dt(rt_a)).status_code == 401
    assert http.get("/api/v1/devices").status_code == 401
    # garbage and unknown secrets
    assert register(http, "rt_not-a-real-token").status_code == 401
    assert init(http, "pt_not-a-real-token").status_code == 401


def test_revoked_provisioning_token(platform: Platform, http: httpx.Client) -> None:
    created = platform.admin.create_provisioning_token("t")
    op = init(http, created.provisioning_token, deviceId="leak-01").json()
    platform.admin.revoke_provisioning_token(created.id)
    assert init(http, created.provisioning_token, deviceId="leak-02").status_code == 401
    with pytest.raises(PlatformError) as err:  # a leaked PT's operation cannot be approved
        platform.admin.approve_operation(op["provisioningOperationId"])
    assert err.value.status in (401, 409)


def test_technician_role(platform: Platform, http: httpx.Client) -> None:
    tech_key = platform.admin.create_api_key("tech", "technician").api_key
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    op = init(http, pt, deviceId="role-01").json()
    tech = {"Authorization": f"Bearer {tech_key}"}
    assert http.get("/api/v1/provisioning-operations", headers=tech).status_code == 200
    approve = http.post(
        f"/api/v1/provisioning-operations/{op['provisioningOperationId']}/approve", headers=tech
    )
    assert approve.status_code == 200
    assert http.get("/api/v1/devices", headers=tech).status_code == 200
    forbidden = http.post("/api/v1/provisioning-tokens", json={"name": "x"}, headers=tech)
    assert forbidden.status_code == 403
    assert http.get("/api/v1/api-keys", headers=tech).status_code == 403
    keys = {k.name: k for k in platform.admin.list_api_keys()}
    platform.admin.revoke_api_key(keys["tech"].id)
    assert http.get("/api/v1/devices", headers=tech).status_code == 401


def test_device_id_modes_over_http(platform: Platform, http: httpx.Client) -> None:
    fixed = platform.admin.create_provisioning_token("t", device_id="fixed-01")
    refused = init(http, fixed.provisioning_token, deviceId="mine-01")
    assert refused.status_code == 400
    assert refused.json()["field"] == "deviceId"
    late = platform.admin.create_provisioning_token(
        "t",
        device_id_override="enforced_at_approval",
        registration_token_lifetime_override="allowed",
        max_registration_token_lifetime=7200,
    )
    op = init(http, late.provisioning_token).json()
    with pytest.raises(PlatformError) as err:
        platform.admin.approve_operation(op["provisioningOperationId"])
    assert err.value.field == "deviceId"
    with pytest.raises(PlatformError) as err:
        platform.admin.approve_operation(
            op["provisioningOperationId"], device_id="late-01", registration_token_lifetime=9000
        )
    assert err.value.field == "registrationTokenLifetime"
    approved = platform.admin.approve_operation(
        op["provisioningOperationId"], device_id="late-01", registration_token_lifetime=600
    )
    assert approved.device_id == "late-01"
    assert approved.registration_token_lifetime == 600
    token = complete(http, late.provisioning_token, op["provisioningOperationId"]).json()
    assert token["lifetime"] == 600


def test_verification_code_lookup_is_rate_limited(platform: Platform, http: httpx.Client) -> None:
    headers = {"Authorization": f"Bearer {platform.admin_key}"}
    statuses = [
        http.get(
            "/api/v1/provisioning-operations",
            params={"verificationCode": "BCDF-GHJK"},
            headers=headers,
        ).status_code
        for _ in range(int(platform.settings.code_lookup_burst) + 1)
    ]
    assert statuses[:-1] == [200] * int(platform.settings.code_lookup_burst)
    assert statuses[-1] == 429


def test_bulk_tokens_for_a_factory_run(platform: Platform, http: httpx.Client) -> None:
    created = platform.admin.create_provisioning_tokens_bulk(
        "run 7", count=5, device_id_prefix="pump-"
    )
    assert [c.device_id for c in created] == [f"pump-{i:05d}" for i in range(1, 6)]
    assert len({c.provisioning_token for c in created}) == 5
    op = init(http, created[2].provisioning_token).json()
    assert platform.admin.get_operation(op["provisioningOperationId"]).device_id == "pump-00003"
    csv = http.post(
        "/api/v1/provisioning-tokens/bulk?format=csv",
        json={"name": "csv", "deviceIds": ["csv-0001", "csv-0002"]},
        headers={"Authorization": f"Bearer {platform.admin_key}"},
    )
    assert csv.status_code == 201
    lines = csv.text.strip().splitlines()
    assert lines[0] == "deviceId,provisioningTokenId,provisioningToken"
    assert [line.split(",")[0] for line in lines[1:]] == ["csv-0001", "csv-0002"]
    duplicate = http.post(
        "/api/v1/provisioning-tokens/bulk",
        json={"name": "dup", "deviceIds": ["dup-0001", "dup-0001"]},
        headers={"Authorization": f"Bearer {platform.admin_key}"},
    )
    assert duplicate.status_code == 400
    assert duplicate.json()["field"] == "deviceIds"


def test_delete_device(platform: Platform, http: httpx.Client) -> None:
    pt = platform.admin.create_provisioning_token("t").provisioning_token
    rt = provision(platform, http, pt, deviceId="gone-01")
    platform.admin.delete_device("gone-01")
    assert register(http, rt).status_code == 401
    with pytest.raises(PlatformError) as err:
        platform.admin.get_device("gone-01")
    assert err.value.status == 404


def test_openapi_and_health(platform: Platform, http: httpx.Client) -> None:
    assert http.get("/health").status_code == 200
    schema = http.get("/schema/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in (
        "/provisioning-operations/init",
        "/provisioning-operations/complete",
        "/devices/register",
        "/devices/registration-tokens/refresh",
        "/api/v1/provisioning-tokens",
        "/api/v1/provisioning-operations/{operation_id}/approve",
    ):
        assert path in paths
