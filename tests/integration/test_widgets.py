"""The approval panel, headless: set values, click, observe, against the real platform."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from iiotsim.clock import ManualClock
from iiotsim.errors import PlatformError
from iiotsim.platform import Platform
from iiotsim.widgets import ApprovalPanel, PanelError


def open_operation(platform: Platform, pt: str, device_id: str | None = None) -> dict[str, str]:
    body = {"deviceId": device_id, "attributes": {"site": "hall-3"}} if device_id else {}
    with httpx.Client(base_url=platform.http_url) as http:
        r = http.post(
            "/provisioning-operations/init",
            json=body,
            headers={"Authorization": f"DeviceToken {pt}"},
        )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture
def panel(platform: Platform, clock: ManualClock) -> Iterator[ApprovalPanel]:
    p = ApprovalPanel(platform.admin, auto_refresh=False, now=clock.now)
    yield p
    p.close()


def test_rows_show_pending_operations_and_approve_by_click(
    platform: Platform, panel: ApprovalPanel, clock: ManualClock
) -> None:
    pt = platform.admin.create_provisioning_token("w").provisioning_token
    op = open_operation(platform, pt, "widget-0001")
    clock.advance(65)
    panel.refresh()
    row = panel.row(op["verificationCode"])
    html = row.info.value
    assert op["verificationCode"] in html and "widget-0001" in html and "site=hall-3" in html
    assert "age 1 min 05 s" in html
    # this token does not let the technician rename the device or set the lifetime
    assert row.device_id.layout.display == "none"
    assert row.lifetime.layout.display == "none"
    row.approve_button.click()
    assert platform.admin.get_operation(op["provisioningOperationId"]).state == "approved"
    assert "approved" in panel.status.value
    assert panel.rows == {}


def test_override_fields_follow_the_token_modes_and_are_validated(
    platform: Platform, panel: ApprovalPanel
) -> None:
    token = platform.admin.create_provisioning_token(
        "tech-names",
        device_id_override="enforced_at_approval",
        max_registration_token_lifetime=86400,
        registration_token_lifetime_override="allowed",
    )
    op = open_operation(platform, token.provisioning_token)
    panel.refresh()
    row = panel.row(op["verificationCode"])
    assert row.device_id.layout.display is None and row.lifetime.layout.display is None
    row.device_id.value = "no"  # too short: refused before sending
    row.approve_button.click()
    assert "Device ID" in panel.status.value
    assert platform.admin.get_operation(op["provisioningOperationId"]).state == "pending"
    row.device_id.value = "pump-0042"
    row.lifetime.value = 2 * 86400  # over the token's maximum
    row.approve_button.click()
    assert "at most 86400" in panel.status.value
    row.lifetime.value = 3600
    row.approve_button.click()
    approved = platform.admin.get_operation(op["provisioningOperationId"])
    assert approved.state == "approved"
    assert approved.device_id == "pump-0042"
    assert approved.registration_token_lifetime == 3600


def test_platform_errors_show_in_the_panel_and_code_calls_raise(
    platform: Platform, panel: ApprovalPanel
) -> None:
    pt = platform.admin.create_provisioning_token("w").provisioning_token
    op = open_operation(platform, pt, "widget-0002")
    panel.refresh()
    row = panel.row(op["provisioningOperationId"])
    platform.admin.cancel_operation(op["provisioningOperationId"])  # someone else cancels
    row.approve_button.click()  # no traceback: the status line says why
    assert "cancelled" in panel.status.value.lower() or "not" in panel.status.value.lower()
    with pytest.raises(PlatformError):
        panel.approve("BCDF-GHJK")
    assert "no open operation" in panel.status.value
    with pytest.raises(PanelError):
        panel.approve(op["provisioningOperationId"], device_id="x")


def test_cancel_from_code(platform: Platform, panel: ApprovalPanel) -> None:
    pt = platform.admin.create_provisioning_token("w").provisioning_token
    op = open_operation(platform, pt, "widget-0003")
    panel.refresh()
    panel.row(op["verificationCode"]).cancel_button.click()
    assert platform.admin.get_operation(op["provisioningOperationId"]).state == "cancelled"
    assert "No operation is waiting" in panel.list.children[0].value


def test_device_view_shows_and_edits_the_twin(platform: Platform) -> None:
    from iiotsim.widgets import DeviceView

    from .mqtt import Device, provision

    reg = provision(platform, "view-0001")
    mqtt = Device(platform, reg.device_id, reg.password)
    assert mqtt.connect() == 0
    mqtt.publish("devices/view-0001/messages/telemetry/mid=v1", b'{"t": 21.5}')
    view = DeviceView(platform.admin, "view-0001")
    try:
        assert "connected" in view.header.value
        assert "21.5" in view.recent.value
        view.desired_patch.value = '{"interval": 10}'
        view.apply_desired.click()
        assert platform.admin.get_twin("view-0001").desired.properties == {"interval": 10}
        assert (
            "v1" in view.sections["desired"].value and "interval" in view.sections["desired"].value
        )
        view.tags_patch.value = "[1, 2]"  # not an object: said in the panel
        view.apply_tags.click()
        assert "JSON object" in view.status.value
        view.tags_patch.value = '{"site": "hall-3"}'
        view.apply_tags.click()
        assert platform.admin.get_twin("view-0001").tags.properties == {"site": "hall-3"}
    finally:
        mqtt.close()


def test_policy_explorer_reruns_the_simulator_on_change() -> None:
    from iiotsim.sim import Scenario
    from iiotsim.widgets import PanelError, PolicyExplorer

    explorer = PolicyExplorer(
        Scenario(fleet_size=60, duration_days=5, seed=1), lifetimes_hours=(1, 24)
    )
    short = explorer.set(lifetime_hours=1.0, off_mean_hours=2.0)
    assert short.scenario.token.lifetime == 3600
    assert short.summary["lockouts"] > 0
    assert "lockouts per 1,000 device-days" in explorer.summary.value
    explorer.controls["lifetime_hours"].value = 1000.0  # a slider move re-runs
    assert explorer.result.scenario.token.lifetime == pytest.approx(3_600_000)
    assert explorer.result.summary["lockouts"] < short.summary["lockouts"]
    assert list(explorer.sweep["token.lifetime"]) == [3600, 86400]
    with pytest.raises(PanelError, match="not a control"):
        explorer.set(colour="blue")
