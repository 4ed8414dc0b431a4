"""The approval panel, headless: set values, click, observe, against the real platform."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jupytext
import numpy as np
import pandas as pd
import pytest

from iiotsim.clock import ManualClock
from iiotsim.errors import PlatformError
from iiotsim.platform import Platform
from iiotsim.sim import Connectivity, Distribution, Scenario, simulate
from iiotsim.widgets import ApprovalPanel, PanelError, PolicyExplorer


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

    from .mqtt import Device, provision, wait_for

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
        assert "interval: <b style='color:#b58900'>pending</b>" in view.convergence.value
        mqtt.publish("devices/view-0001/twin/reported", b'{"interval": 10}')
        twin = platform.admin.get_twin
        assert wait_for(lambda: twin("view-0001").convergence["interval"].state == "converged")
        view.refresh()
        assert "interval: <b style='color:#2e7d32'>converged</b>" in view.convergence.value
        assert "by manual patch" in view.convergence.value
        view.tags_patch.value = "[1, 2]"  # not an object: said in the panel
        view.apply_tags.click()
        assert "JSON object" in view.status.value
        view.tags_patch.value = '{"site": "hall-3"}'
        view.apply_tags.click()
        assert platform.admin.get_twin("view-0001").tags.properties == {"site": "hall-3"}
        # the last changes, newest first, from the audit trail (an admin key's view)
        history = view.history.value
        assert history.index("twin.tags_patched") < history.index("twin.desired_patched")
        assert history.index("twin.desired_patched") < history.index("device.registered")
    finally:
        mqtt.close()


def notebook_scenario(fleet_size: int = 60, days: float = 8) -> Scenario:
    """Notebook 02's fleet (lognormal outages, sigma 1.5), smaller."""
    return Scenario(
        fleet_size=fleet_size,
        duration_days=days,
        connectivity=Connectivity(
            on=Distribution.exponential(12 * 3600), off=Distribution.lognormal(2 * 3600, 1.5)
        ),
        seed=2026,
    )


def figure_data(figure: Any, axes: slice = slice(None)) -> bytes:
    """Everything drawn on the figure's axes (points, lines, areas, titles), as bytes."""
    parts: list[bytes] = []
    for ax in figure.axes[axes]:
        parts.append(ax.get_title().encode())
        for line in ax.get_lines():
            parts.append(np.asarray(line.get_xydata(), dtype=float).tobytes())
        for collection in ax.collections:
            parts.append(np.asarray(collection.get_offsets(), dtype=float).tobytes())
            for path in collection.get_paths():
                parts.append(np.asarray(path.vertices, dtype=float).tobytes())
    return b"|".join(parts)


def test_policy_explorer_reruns_the_simulator_on_change() -> None:
    explorer = PolicyExplorer(
        Scenario(fleet_size=60, duration_days=5, seed=1), lifetimes_hours=(1, 24)
    )
    short = explorer.set(lifetime_hours=1.0, off_mean_hours=2.0)
    assert short.scenario.token.lifetime == 3600
    assert short.summary["lockouts"] > 0
    assert "lockouts per 1,000 device-days" in explorer.summary.value
    explorer.controls["lifetime_hours"].value = 720.0  # a slider move re-runs
    assert explorer.result.scenario.token.lifetime == 720 * 3600
    assert explorer.result.summary["lockouts"] < short.summary["lockouts"]
    assert list(explorer.sweep["token.lifetime"]) == [3600, 86400]
    with pytest.raises(PanelError, match="not a control"):
        explorer.set(colour="blue")


def test_policy_explorer_numbers_are_simulate_of_the_unchanged_scenario() -> None:
    """Found item 1: the explorer rebuilt the outage distribution with shape 1.0."""
    base = notebook_scenario()
    explorer = PolicyExplorer(base, lifetimes_hours=(1, 24))
    assert explorer.scenario() == base  # untouched controls: the scenario itself
    for hours in (1, 24):
        expected = simulate(base.replace(**{"token.lifetime": hours * 3600.0})).summary
        shown = explorer.set(lifetime_hours=hours)
        pd.testing.assert_series_equal(shown.summary, expected)
        row = explorer.sweep.set_index("token.lifetime").loc[hours * 3600.0]
        assert row["lockouts_per_1000_device_days"] == expected["lockouts_per_1000_device_days"]
        assert row["rt_leak_exposure_mean_h"] == expected["rt_leak_exposure_mean_h"]
        assert f"{expected['lockouts_per_1000_device_days']:.1f}" in explorer.summary.value
    fraction = explorer.set(refresh_fraction=0.25)
    quarter = simulate(base.replace(**{"token.lifetime": 86400.0, "token.refresh_fraction": 0.25}))
    pd.testing.assert_series_equal(fraction.summary, quarter.summary)


def test_policy_explorer_offers_the_lifetimes_architects_use() -> None:
    """Found item 2: a log slider showed 794 for 720 and could not pick 24 h or 168 h."""
    explorer = PolicyExplorer(notebook_scenario(40, 4), lifetimes_hours=(24,))
    lifetime = explorer.controls["lifetime_hours"]
    labels = [label for label, _hours in lifetime.options]
    assert labels == ["1 h", "6 h", "1 d", "3 d", "7 d", "30 d", "90 d", "infinite"]
    for hours, label in ((720, "30 d"), (24, "1 d"), (168, "7 d"), (2160, "90 d")):
        result = explorer.set(lifetime_hours=hours)
        assert (lifetime.value, lifetime.label) == (hours, label)
        assert result.scenario.token.lifetime == hours * 3600
    assert explorer.set(lifetime_hours=math.inf).scenario.token.lifetime is None
    assert explorer.controls["lifetime_hours"].label == "infinite"
    with pytest.raises(PanelError, match="lifetime_hours: one of 1, 6, 24"):
        explorer.set(lifetime_hours=794)
    with pytest.raises(PanelError, match="refresh_fraction"):
        explorer.set(refresh_fraction=0.33)


def test_policy_explorer_keeps_a_base_lifetime_outside_the_list() -> None:
    base = notebook_scenario(20, 2).replace(**{"token.lifetime": 4 * 3600.0})
    explorer = PolicyExplorer(base, lifetimes_hours=(24,))
    assert explorer.controls["lifetime_hours"].label == "4 h"
    assert explorer.scenario() == base


def test_policy_explorer_every_control_redraws_every_plot() -> None:
    """Found item 2: moving the lifetime did not redraw the trade-off plot."""
    explorer = PolicyExplorer(notebook_scenario(60, 6), lifetimes_hours=(1, 6, 24))
    explorer.set(lifetime_hours=1)
    changes = {
        "lifetime_hours": 6,
        "refresh_fraction": 0.25,
        "off_kind": "weibull",
        "off_mean_hours": 4.0,
        "off_shape": 0.7,
        "technicians": 1,
    }
    for key, value in changes.items():
        before, draws = explorer.figure, explorer.draws
        explorer.controls[key].value = value  # what a user's click does
        explorer.wait_for_band()
        assert explorer.band_pending == 0, key
        assert explorer.draws in (draws + 1, draws + 2), key  # at once, and the band
        assert explorer.figure is not before, key
        assert figure_data(explorer.figure) != figure_data(before), key
        if key != "technicians":  # technicians change recovery, not lockouts or exposure
            tradeoff_now = figure_data(explorer.figure, slice(0, 1))
            assert tradeoff_now != figure_data(before, slice(0, 1)), key
    assert explorer.result.scenario.connectivity.off == Distribution.weibull(4 * 3600, 0.7)
    assert explorer.result.scenario.provisioning.technicians == 1


def test_policy_explorer_answers_a_change_before_the_band_is_run() -> None:
    """Issue 11: the explorer re-ran every lifetime of the band before answering a
    change of outages or technicians (1.5-3 s): it now shows the policy at once and
    finishes the band in the background; a newer change supersedes an older band."""
    base = notebook_scenario(60, 6)
    explorer = PolicyExplorer(base, lifetimes_hours=(1, 6, 24))
    with explorer._lock:  # the band's thread cannot draw while the test looks
        explorer.controls["technicians"].value = 1
        assert explorer.result.scenario.provisioning.technicians == 1
        assert explorer.band_pending == 3
        assert "updating the trade-off: 3 lifetimes" in explorer.summary.value
        assert "(updating)" in explorer.figure.axes[0].get_title()
        superseded = explorer._band_thread
        explorer.controls["technicians"].value = 2
    assert superseded is not None
    superseded.join(60)
    explorer.wait_for_band()
    assert explorer.band_pending == 0
    assert "updating" not in explorer.summary.value
    assert "(updating)" not in explorer.figure.axes[0].get_title()
    two = base.replace(**{"provisioning.technicians": 2})
    for hours, row in zip((1, 6, 24), explorer.sweep.itertuples(), strict=True):
        expected = simulate(two.replace(**{"token.lifetime": hours * 3600.0})).summary
        assert row.seed == two.seed
        assert row.lockouts == expected["lockouts"]
        assert row.technician_approvals_per_day == expected["technician_approvals_per_day"]
    shown = explorer.output.outputs[0]["data"]
    assert "image/png" in shown


def test_policy_explorer_labels_are_not_truncated() -> None:
    """Found item 2: "outage mean h" was cut to "outage m…" by the default label width."""
    explorer = PolicyExplorer(notebook_scenario(20, 2), lifetimes_hours=(24,))
    for key, control in explorer.controls.items():
        assert control.style.description_width == "initial", key
        assert control.description, key
    assert explorer.controls["off_mean_hours"].description == "outage mean (h)"


NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
_SHOWN = re.compile(
    r"^(\w+)\s*=\s*(?:Platform|ApprovalPanel|DeviceView|PolicyExplorer)\(", re.MULTILINE
)


def closed_after_run_all(source: str) -> list[str]:
    """The calls in a notebook's code that close a widget or stop a platform the notebook
    made (``panel.close()``, ``platform.stop()``, ``platform.admin.close()``): after Run
    All, a person still clicks what those cells killed."""
    cells = [
        c.source for c in jupytext.reads(source, fmt="py:percent").cells if c.cell_type == "code"
    ]
    code = "\n".join(cells)
    names = set(_SHOWN.findall(code))
    return [
        m.group(0)
        for name in sorted(names)
        for m in re.finditer(rf"\b{name}(?:\.admin)?\.(?:close|stop)\(\)", code)
    ]


def test_the_closing_check_finds_a_teardown_cell() -> None:
    source = "# %%\nplatform = Platform().start()\npanel = ApprovalPanel(platform.admin)\n" + (
        "# %%\npanel.close(); platform.stop()\n"
    )
    assert closed_after_run_all(source) == ["panel.close()", "platform.stop()"]
    assert (
        closed_after_run_all(source.replace("# %%\npanel.close", "# %% [markdown]\n# panel.close"))
        == []
    )


@pytest.mark.parametrize(
    "source", sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py")), ids=lambda p: p.stem
)
def test_no_notebook_kills_what_a_person_still_uses_after_run_all(source: Path) -> None:
    """Notebook 05 closed its approval panel in its last cell (the panel ended empty) and
    03 stopped its platform (the device view's "Patch desired" answered "the client has
    been closed"). A notebook ends with a note on how to stop instead."""
    assert closed_after_run_all(source.read_text()) == []


def test_select_all_matching_approves_exactly_what_was_previewed(
    platform: Platform, panel: ApprovalPanel, clock: ManualClock
) -> None:
    pt = platform.admin.create_provisioning_token("line 3").provisioning_token
    ops = {d: open_operation(platform, pt, d) for d in ("line3-0001", "line3-0002", "line4-0001")}
    panel.approve_all_button.click()  # nothing previewed: refused in the panel, no traceback
    assert "preview first" in panel.status.value
    panel.match_text.value = "line3-*"
    panel.preview_button.click()
    assert "2 match line3-*: 2 would be approved" in panel.preview_box.value
    assert "line3-0001" in panel.preview_box.value and "line4-0001" not in panel.preview_box.value
    assert panel.approve_all_button.description == "Approve all 2"
    assert not panel.approve_all_button.disabled
    assert {op.state for op in platform.admin.list_operations()} == {"pending"}  # a dry run

    late = open_operation(platform, pt, "line3-0003")  # matches, but started after the preview
    panel.approve_all_button.click()
    states = {op.device_id: op.state for op in platform.admin.list_operations()}
    assert states == {
        "line3-0001": "approved",
        "line3-0002": "approved",
        "line3-0003": "pending",
        "line4-0001": "pending",
    }
    assert "2 approved" in panel.status.value
    assert panel.approve_all_button.disabled  # the preview was used up
    assert set(panel.rows) == {
        late["provisioningOperationId"],
        ops["line4-0001"]["provisioningOperationId"],
    }

    # a prefix; editing the text forgets the preview; a bad one is the platform's 400
    panel.preview("line")
    assert panel.approve_all_button.description == "Approve all 2"
    panel.match_text.value = "line4"
    assert panel.approve_all_button.disabled and panel.previewed_ids == []
    panel.match_text.value = "line[3]"
    panel.preview_button.click()
    assert "(field filter.deviceIdPrefix)" in panel.status.value
    assert panel.approve_all_button.disabled
