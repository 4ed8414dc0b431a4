"""Pausing a Provisioning Token (issue 15): a reversible stop for new provisioning, by an
admin (``POST /api/v1/provisioning-tokens/{id}/pause`` and ``/resume``, the AdminClient, the
CLI) or by leak detection's ``pause_token`` response. Real HTTP against the real platform:
the device API with httpx and the device SDK, the admin API with :class:`AdminClient`."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from iiot_device import ProvisioningTokenRefused
from iiot_device.api import DeviceApi
from iiot_server.domain.errors import SettingsError
from iiot_server.settings import Settings

from iiotsim.admin import AdminClient
from iiotsim.cli import main
from iiotsim.clock import ManualClock
from iiotsim.errors import PlatformError
from iiotsim.platform import Platform

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

PAUSED = "/problems/provisioningTokenPaused"


def init(http: httpx.Client, pt: str, device_id: str) -> httpx.Response:
    return http.post(
        "/provisioning-operations/init",
        json={"deviceId": device_id},
        headers={"Authorization": f"DeviceToken {pt}"},
    )


def complete(http: httpx.Client, pt: str, operation_id: str) -> httpx.Response:
    return http.put(
        "/provisioning-operations/complete",
        json={"provisioningOperationId": operation_id},
        headers={"Authorization": f"DeviceToken {pt}"},
    )


def test_a_paused_token_opens_no_operation_until_resumed(
    platform: Platform, http: httpx.Client
) -> None:
    created = platform.admin.create_provisioning_token("line 1")
    pt = created.provisioning_token
    assert created.paused is False and created.paused_at is None
    opened = init(http, pt, "pump-0001")  # before the pause
    assert opened.status_code == 200

    paused = platform.admin.pause_token(created.id, reason="investigating line 1")
    assert paused.paused is True and paused.paused_at is not None
    assert paused.paused_reason == "investigating line 1"
    assert platform.admin.get_provisioning_token(created.id).paused is True

    refused = init(http, pt, "pump-0002")
    assert refused.status_code == 403
    problem = refused.json()
    assert problem["type"] == PAUSED
    assert created.id in problem["detail"] and "paused" in problem["detail"]
    assert "investigating line 1" in problem["detail"]
    sdk = DeviceApi(platform.http_url)
    try:  # the device SDK names it
        with pytest.raises(ProvisioningTokenRefused, match="paused"):
            sdk.init(pt, "pump-0002", None)
    finally:
        sdk.close()

    # the operation opened before the pause: approved and completed as usual
    operation = opened.json()
    platform.admin.approve_operation(operation["verificationCode"])
    done = complete(http, pt, operation["provisioningOperationId"])
    assert done.status_code == 200, done.text
    assert done.json()["registrationToken"]

    again = platform.admin.pause_token(created.id)  # already paused: nothing changes
    assert (again.paused_at, again.paused_reason) == (paused.paused_at, paused.paused_reason)
    resumed = platform.admin.resume_token(created.id)
    assert (resumed.paused, resumed.paused_at, resumed.paused_reason) == (False, None, None)
    assert init(http, pt, "pump-0002").status_code == 200

    audited = platform.admin.audit(target_id=created.id, action="token.")
    assert [e.action for e in audited] == ["token.resumed", "token.paused", "token.created"]
    assert audited[1].reason == "investigating line 1"
    assert audited[1].actor.startswith("api_key:")


def test_a_revoked_token_cannot_be_paused(platform: Platform) -> None:
    created = platform.admin.create_provisioning_token("line 1")
    platform.admin.revoke_provisioning_token(created.id)
    with pytest.raises(PlatformError) as conflict:
        platform.admin.pause_token(created.id)
    assert conflict.value.status == 409
    assert "revoked" in str(conflict.value)
    assert platform.admin.get_provisioning_token(created.id).paused is False


def test_a_workspace_key_cannot_pause_another_workspaces_token(platform: Platform) -> None:
    theirs = platform.admin.create_provisioning_token("default's line")
    platform.admin.create_workspace("ws-1")
    with platform.admin.in_workspace("ws-1") as ws1:
        secret = ws1.create_api_key("ws-1 admin", "admin").api_key
    with AdminClient(platform.http_url, secret, workspace="ws-1") as other:
        for act in (other.pause_token, other.resume_token):
            with pytest.raises(PlatformError) as hidden:
                act(theirs.id)
            assert hidden.value.status == 404
    assert platform.admin.get_provisioning_token(theirs.id).paused is False


def test_the_cli_pauses_and_resumes(
    platform: Platform, http: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    created = platform.admin.create_provisioning_token("line 1")
    connection = ["--server", platform.http_url, "--api-key", platform.admin_key]
    assert main(["token", "pause", created.id, "--reason", "leak?", *connection]) == 0
    assert "Paused" in capsys.readouterr().out
    assert init(http, created.provisioning_token, "pump-0001").status_code == 403
    assert main(["token", "resume", created.id, *connection]) == 0
    assert "Resumed" in capsys.readouterr().out
    assert init(http, created.provisioning_token, "pump-0001").status_code == 200


def test_the_leak_response_pause_token_pauses_the_token(
    clock: ManualClock, tmp_path: Path, database_url: str | None
) -> None:
    settings = Settings(
        leak_response_provisioning_device_ids="pause_token",  # type: ignore[arg-type]
    )
    with (
        Platform(
            data_dir=tmp_path / "data", clock=clock, settings=settings, database_url=database_url
        ) as platform,
        httpx.Client(base_url=platform.http_url, timeout=30) as http,
    ):
        created = platform.admin.create_provisioning_token("line 1")
        pt = created.provisioning_token
        for i in range(1, 7):  # one naming scheme
            assert init(http, pt, f"pump-{i:04d}").status_code == 200
        assert platform.admin.get_provisioning_token(created.id).paused is False
        assert init(http, pt, "camera-lobby").status_code == 200  # foreign: the alert
        [alert] = platform.admin.alerts(kind="provisioning_device_ids")
        assert alert.response == "pause_token: provisioning token paused"
        token = platform.admin.get_provisioning_token(created.id)
        assert token.paused is True and token.revoked_at is None
        assert token.paused_reason == f"leak alert provisioning_device_ids {alert.id}"
        refused = init(http, pt, "pump-0007")
        assert (refused.status_code, refused.json()["type"]) == (403, PAUSED)
        [event] = platform.admin.audit(action="token.paused")
        assert event.actor == "system"
        platform.admin.resume_token(created.id)  # a false positive: no new token needed
        assert init(http, pt, "pump-0007").status_code == 200


def test_pause_token_is_a_response_for_the_token_kinds_only() -> None:
    for kind in ("provisioning_rate", "provisioning_device_ids"):
        settings = Settings.from_environment(**{f"leak_response_{kind}": "pause_token"})
        assert getattr(settings, f"leak_response_{kind}") == "pause_token"
    with pytest.raises(SettingsError, match="leak_response_shared_credential must be one of"):
        Settings.from_environment(leak_response_shared_credential="pause_token")
