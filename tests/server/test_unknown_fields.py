"""A request body with a field the API does not know is refused with a 400 problem naming
it, so a misspelt option is never silently dropped (issue 12: snake_case
``max_registration_token_lifetime`` created a token with no maximum lifetime). The bodies
a Spotflow device sends still pass."""

from __future__ import annotations

import httpx
import pytest

from iiotsim.platform import Platform

from .device_calls import dt

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

TOKENS = "/api/v1/provisioning-tokens"


def admin(platform: Platform) -> httpx.Client:
    return httpx.Client(
        base_url=platform.http_url,
        headers={"Authorization": f"Bearer {platform.admin_key}"},
        timeout=30,
    )


@pytest.mark.parametrize(
    ("path", "body", "unknown", "hint"),
    [
        (TOKENS, {"name": "x", "max_registration_token_lifetime": 86400},
         "max_registration_token_lifetime", "maxRegistrationTokenLifetime"),
        (TOKENS, {"name": "x", "deviceIdOverrideMode": "disabled"}, "deviceIdOverrideMode", None),
        (f"{TOKENS}/bulk", {"name": "x", "device_ids": ["pump-1"]}, "device_ids", "deviceIds"),
        ("/api/v1/api-keys", {"name": "x", "role": "admin", "scope": "all"}, "scope", None),
        ("/api/v1/fleet-configurations",
         {"targetCondition": {"eq": {"path": "tags.site", "value": "a"}},
          "desiredProperties": {}, "priorty": 3}, "priorty", None),
    ],
)  # fmt: skip
def test_admin_bodies_with_unknown_fields_are_refused_by_name(
    platform: Platform, path: str, body: dict[str, object], unknown: str, hint: str | None
) -> None:
    with admin(platform) as client:
        response = client.post(path, json=body)
        assert response.status_code == 400, response.text
        problem = response.json()
        assert problem["field"] == unknown
        assert f"unknown field `{unknown}`" in problem["detail"]
        if hint:
            assert f"did you mean {hint}?" in problem["detail"]
        else:
            assert "did you mean" not in problem["detail"]
        assert client.get(TOKENS).json() == []  # nothing created


def test_approve_refuses_an_unknown_field_and_takes_no_body(platform: Platform) -> None:
    pt = platform.admin.create_provisioning_token("line").provisioning_token
    with httpx.Client(base_url=platform.http_url, timeout=30) as device, admin(platform) as client:
        op = device.post(
            "/provisioning-operations/init", json={"deviceId": "pump-1"}, headers=dt(pt)
        ).json()
        approve = f"/api/v1/provisioning-operations/{op['verificationCode']}/approve"
        refused = client.post(approve, json={"registration_token_lifetime": 3600})
        assert refused.status_code == 400
        assert refused.json()["field"] == "registration_token_lifetime"
        assert "did you mean registrationTokenLifetime?" in refused.json()["detail"]
        assert platform.admin.get_operation(op["provisioningOperationId"]).state == "pending"
        assert client.post(approve).status_code == 200


def test_device_bodies_with_unknown_fields_are_refused(platform: Platform) -> None:
    pt = platform.admin.create_provisioning_token("line").provisioning_token
    with httpx.Client(base_url=platform.http_url, timeout=30) as device:
        response = device.post(
            "/provisioning-operations/init",
            json={"deviceId": "pump-1", "device_id": "pump-2"},
            headers=dt(pt),
        )
        assert response.status_code == 400
        assert response.json()["field"] == "device_id"
        assert "did you mean deviceId?" in response.json()["detail"]


def test_the_bodies_a_spotflow_device_sends_still_pass(platform: Platform) -> None:
    """As the Spotflow device SDK sends them: init ``{}`` or ``{"deviceId"}``, complete
    ``{"provisioningOperationId"}``, register ``{"connectionStringType":
    "SharedAccessSignature"}`` (our register reads no body), refresh
    ``{"registrationToken"}``."""
    pt = platform.admin.create_provisioning_token(
        "line", device_id_override="allowed_at_init", device_id="pump-0"
    ).provisioning_token
    with httpx.Client(base_url=platform.http_url, timeout=30) as device:
        assert (
            device.post("/provisioning-operations/init", json={}, headers=dt(pt)).status_code == 200
        )
        init = device.post(
            "/provisioning-operations/init", json={"deviceId": "pump-1"}, headers=dt(pt)
        )
        assert init.status_code == 200, init.text
        operation_id = init.json()["provisioningOperationId"]
        platform.admin.approve_operation(operation_id)
        completed = device.put(
            "/provisioning-operations/complete",
            json={"provisioningOperationId": operation_id},
            headers=dt(pt),
        )
        assert completed.status_code == 200, completed.text
        rt = completed.json()["registrationToken"]
        registered = device.put(
            "/devices/register",
            json={"connectionStringType": "SharedAccessSignature"},
            headers=dt(rt),
        )
        assert registered.status_code == 200, registered.text
        refreshed = device.put(
            "/devices/registration-tokens/refresh", json={"registrationToken": rt}, headers=dt(pt)
        )
        assert refreshed.status_code == 201, refreshed.text


def test_the_document_says_request_bodies_take_no_other_fields(platform: Platform) -> None:
    """So a client (and schemathesis) reading the document expects the refusal."""
    schemas = httpx.get(f"{platform.http_url}/schema/openapi.json").json()["components"]["schemas"]
    for name in ("CreateProvisioningTokenRequest", "ApproveRequest", "InitOperationRequest",
                 "CompleteOperationRequest", "RefreshRequest", "FleetConfigurationIn"):  # fmt: skip
        assert schemas[name]["additionalProperties"] is False, name
    assert "additionalProperties" not in schemas["OperationOut"]  # answers stay open
