"""A technician approves (or cancels) by the code the device shows, through the API: the
code in any case and with or without its dash (issue 12: approving by code answered a
misleading 404 "no Provisioning Operation 'QBQR-JXVW'")."""

from __future__ import annotations

import httpx
import pytest

from iiotsim.platform import Platform

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)


def _init(platform: Platform, http: httpx.Client, device_id: str) -> dict[str, str]:
    pt = platform.admin.create_provisioning_token("by-code").provisioning_token
    answer = http.post(
        "/provisioning-operations/init",
        json={"deviceId": device_id},
        headers={"Authorization": f"DeviceToken {pt}"},
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _admin(platform: Platform) -> dict[str, str]:
    return {"Authorization": f"Bearer {platform.admin_key}"}


@pytest.mark.parametrize("spelling", [str, str.lower, lambda code: code.replace("-", "")])
def test_approve_by_the_code_the_device_shows(
    platform: Platform, http: httpx.Client, spelling: object
) -> None:
    op = _init(platform, http, "by-code-0001")
    code = spelling(op["verificationCode"])  # type: ignore[operator]
    approved = http.post(
        f"/api/v1/provisioning-operations/{code}/approve", headers=_admin(platform)
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["id"] == op["provisioningOperationId"]
    assert approved.json()["state"] == "approved"


def test_cancel_by_code(platform: Platform, http: httpx.Client) -> None:
    op = _init(platform, http, "by-code-0002")
    cancelled = http.post(
        f"/api/v1/provisioning-operations/{op['verificationCode'].lower()}/cancel",
        headers=_admin(platform),
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"


def test_a_code_no_open_operation_shows_is_a_clear_404(
    platform: Platform, http: httpx.Client
) -> None:
    op = _init(platform, http, "by-code-0003")
    http.post(
        f"/api/v1/provisioning-operations/{op['provisioningOperationId']}/cancel",
        headers=_admin(platform),
    )
    again = http.post(
        f"/api/v1/provisioning-operations/{op['verificationCode']}/approve",
        headers=_admin(platform),
    )
    assert again.status_code == 404
    assert again.json()["field"] == "operationId"
    assert "no open operation shows the code" in again.json()["detail"]


def test_ids_still_work_and_unknown_ones_are_404(platform: Platform, http: httpx.Client) -> None:
    op = _init(platform, http, "by-code-0004")
    by_id = http.post(
        f"/api/v1/provisioning-operations/{op['provisioningOperationId']}/approve",
        headers=_admin(platform),
    )
    assert by_id.status_code == 200
    unknown = http.post(
        "/api/v1/provisioning-operations/not-an-id/approve", headers=_admin(platform)
    )
    assert unknown.status_code == 404
