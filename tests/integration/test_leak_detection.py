"""Leak detection (issue 15, ``docs/leak_detection.md``): each incident staged with real
clients against the real platform (paho over MQTT from two loopback addresses, httpx for the
device API), its alert read back over the admin API, and the automatic responses the
settings ask for (the device revoked and its MQTT session closed; the Provisioning Token
revoked)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from iiot_server.settings import Settings
from iiot_server.store.database import sync_url
from iiot_server.store.schema import audit_events
from sqlalchemy import create_engine, select

from iiotsim.cli import main
from iiotsim.clock import ManualClock
from iiotsim.errors import PlatformError
from iiotsim.platform import Platform
from iiotsim.widgets import DeviceView

from .mqtt import WAIT, Device, Registered, provision, wait_for

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

GRACE = 300.0  # the refresh grace period (domain/tokens.py DEFAULT_REFRESH_GRACE_PERIOD)


class BoundDevice(Device):
    """A paho connection from a chosen loopback address (Linux routes all of 127/8 to lo),
    that stays down once pushed out (no automatic reconnect to muddle the counts)."""

    def __init__(self, platform: Platform, registered: Registered, address: str) -> None:
        super().__init__(platform, registered.device_id, registered.password)
        self.address = address

    def connect(self) -> int:
        self.client.connect(self.host, self.port, keepalive=30, bind_address=self.address)
        self.client.loop_start()
        assert self._answered.wait(WAIT), "no CONNACK"
        return -1 if self.connack is None else self.connack

    def _on_disconnect(self, *args: Any) -> None:
        super()._on_disconnect(*args)
        self.client.disconnect()  # paho's loop would reconnect by itself


def connect_from(
    platform: Platform, registered: Registered, address: str, devices: list[Device]
) -> BoundDevice:
    device = BoundDevice(platform, registered, address)
    devices.append(device)
    assert device.connect() == 0
    return device


def take_over(
    platform: Platform, registered: Registered, address: str, devices: list[Device]
) -> BoundDevice:
    """Connect from ``address`` while the newest connection of ``devices`` is live: it is
    pushed out."""
    previous = devices[-1]
    newcomer = connect_from(platform, registered, address, devices)
    assert previous.disconnected.wait(WAIT), "the first connection was not taken over"
    return newcomer


def kinds(platform: Platform, **filters: Any) -> list[str]:
    return [a.kind for a in platform.admin.alerts(**filters)]


def test_one_password_from_two_addresses_then_flapping(
    platform: Platform, clock: ManualClock, devices: list[Device]
) -> None:
    pump = provision(platform, "pump-0001")
    connect_from(platform, pump, "127.0.0.1", devices)
    # a reconnect over a half-open connection from the same address: no shared credential
    take_over(platform, pump, "127.0.0.1", devices)
    assert platform.admin.alerts(kind="shared_credential") == []

    clock.advance(5)
    take_over(platform, pump, "127.0.0.2", devices)  # the same password, another address
    shared = platform.admin.alerts(kind="shared_credential")
    assert len(shared) == 1
    alert = shared[0]
    assert (alert.severity, alert.device_id, alert.state) == ("high", "pump-0001", "open")
    assert alert.evidence["sameRegistrationToken"] is True
    assert alert.evidence["previous"]["address"] == "127.0.0.1"
    assert alert.evidence["newcomer"]["address"] == "127.0.0.2"
    assert alert.response is None  # no automatic response by default
    assert "connection_flapping" not in kinds(platform)  # 2 takeovers, threshold 3 a minute

    clock.advance(61)  # both earlier takeovers leave the flapping window
    take_over(platform, pump, "127.0.0.2", devices)
    take_over(platform, pump, "127.0.0.2", devices)
    assert "connection_flapping" not in kinds(platform)
    take_over(platform, pump, "127.0.0.2", devices)  # a third within the minute
    flapping = platform.admin.alerts(kind="connection_flapping", device_id="pump-0001")
    assert [(a.severity, a.evidence["takeoversInWindow"]) for a in flapping] == [("medium", 3)]

    # repeats count on the open alert; once acknowledged, a repeat raises a new one
    take_over(platform, pump, "127.0.0.1", devices)
    [again] = platform.admin.alerts(kind="shared_credential")
    assert again.id == alert.id and again.occurrences == 2
    acknowledged = platform.admin.acknowledge_alert(alert.id)
    assert acknowledged.state == "acknowledged"
    assert platform.admin.alerts(kind="shared_credential", state="open") == []
    take_over(platform, pump, "127.0.0.2", devices)
    assert len(platform.admin.alerts(kind="shared_credential", state="open")) == 1
    view = DeviceView(platform.admin, "pump-0001")  # the device view lists its open alerts
    assert "shared_credential" in view.alerts.value
    assert "connection_flapping" in view.alerts.value


def refresh(http: httpx.Client, pt: str, rt: str) -> httpx.Response:
    return http.put(
        "/devices/registration-tokens/refresh",
        json={"registrationToken": rt},
        headers={"Authorization": f"DeviceToken {pt}"},
    )


def register(http: httpx.Client, rt: str) -> httpx.Response:
    return http.put("/devices/register", headers={"Authorization": f"DeviceToken {rt}"})


def test_a_refreshed_token_presented_again_is_a_replay(
    platform: Platform, clock: ManualClock, http: httpx.Client
) -> None:
    pump = provision(platform, "pump-0001")
    # the thief refreshes the stolen token first: the device's own copy is replaced
    stolen_child = refresh(http, pump.pt, pump.rt)
    assert stolen_child.status_code == 201
    clock.advance(60)
    assert register(http, pump.rt).status_code == 200  # in its grace period: no alert
    assert platform.admin.alerts() == []

    clock.advance(GRACE)
    # the device's next register with its own (now superseded) token: refused, and flagged
    assert register(http, pump.rt).status_code == 401
    [alert] = platform.admin.alerts(kind="token_replay")
    assert (alert.severity, alert.device_id) == ("high", "pump-0001")
    assert alert.evidence["use"] == "device_api"  # the route's guard checks it first
    assert alert.evidence["supersededAt"] is not None

    # an expired or admin-revoked token is no replay: revoke the device, present the child
    platform.admin.revoke_device("pump-0001")
    assert register(http, stolen_child.json()["registrationToken"]).status_code == 401
    assert len(platform.admin.alerts()) == 1


def init(http: httpx.Client, pt: str, device_id: str) -> httpx.Response:
    return http.post(
        "/provisioning-operations/init",
        json={"deviceId": device_id},
        headers={"Authorization": f"DeviceToken {pt}"},
    )


def test_a_provisioning_token_opening_foreign_device_ids(
    platform: Platform, http: httpx.Client
) -> None:
    pt = platform.admin.create_provisioning_token("line 1").provisioning_token
    for i in range(1, 7):
        assert init(http, pt, f"pump-{i:04d}").status_code == 200
    assert platform.admin.alerts() == []  # pump-0001 … pump-0006: one naming scheme
    assert init(http, pt, "pump-0100").status_code == 200  # still inside 'pump-'
    assert platform.admin.alerts() == []
    assert init(http, pt, "camera-lobby").status_code == 200
    [alert] = platform.admin.alerts(kind="provisioning_device_ids")
    assert alert.severity == "medium"
    assert alert.evidence["deviceId"] == "camera-lobby"
    assert alert.evidence["expectedPrefix"] == "pump-"
    assert alert.provisioning_token_id is not None
    # filters: raised since; a date-time the pattern passes but the calendar does not: 400
    assert platform.admin.alerts(since=alert.at) == [alert]
    assert platform.admin.alerts(since=alert.at + timedelta(seconds=1)) == []
    bad = http.get(
        "/api/v1/alerts",
        params={"since": "2026-13-01T08:00:00Z"},
        headers={"Authorization": f"Bearer {platform.admin_key}"},
    )
    assert (bad.status_code, bad.json()["field"]) == (400, "since")


def test_a_provisioning_burst_counts_on_one_alert_until_acknowledged_or_quiet(
    clock: ManualClock, tmp_path: Path, database_url: str | None
) -> None:
    """Every init past the rate limit repeats the finding: counted on the open alert (the
    service remembers which one and checks it is still open and recent), a new alert once
    that one is acknowledged or not seen for ``leak_alert_repeat_window``."""
    settings = Settings(leak_provisioning_floor=3, leak_alert_repeat_window=60)
    with (
        Platform(
            data_dir=tmp_path / "data", clock=clock, settings=settings, database_url=database_url
        ) as platform,
        httpx.Client(base_url=platform.http_url, timeout=30) as http,
    ):
        pt = platform.admin.create_provisioning_token("line 1").provisioning_token
        valves = (f"valve-{i:04d}" for i in range(1, 100))
        for _ in range(3):
            assert init(http, pt, next(valves)).status_code == 200
        assert platform.admin.alerts() == []
        for _ in range(3):  # the 4th, 5th and 6th in the window: one alert, seen 3 times
            clock.advance(1)
            assert init(http, pt, next(valves)).status_code == 200
        [first] = platform.admin.alerts(kind="provisioning_rate")
        assert (first.occurrences, first.last_seen_at) == (3, clock.now())
        assert first.evidence["initsInWindow"] == 4  # the evidence of the first finding

        platform.admin.acknowledge_alert(first.id)
        for _ in range(2):
            assert init(http, pt, next(valves)).status_code == 200
        second, acknowledged = platform.admin.alerts(kind="provisioning_rate")
        assert (acknowledged.id, acknowledged.occurrences) == (first.id, 3)
        assert second.id != first.id and second.occurrences == 2

        clock.advance(61)  # the open alert goes unseen for longer than the repeat window
        assert init(http, pt, next(valves)).status_code == 200
        third = platform.admin.alerts(kind="provisioning_rate", state="open")
        assert [(a.id != second.id, a.occurrences) for a in third] == [(True, 1), (False, 2)]


def test_the_alerts_command_lists_and_acknowledges(
    platform: Platform, http: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    pt = platform.admin.create_provisioning_token("line 1").provisioning_token
    for device_id in ("pump-0001", "pump-0002", "pump-0003", "pump-0004", "pump-0005", "cam-1"):
        init(http, pt, device_id)
    connection = ["--server", platform.http_url, "--api-key", platform.admin_key]
    assert main(["alerts", *connection]) == 0
    listed = capsys.readouterr().out
    assert "provisioning_device_ids" in listed and "medium" in listed
    [alert] = platform.admin.alerts()
    platform.admin.create_workspace("ws-1")  # another workspace sees none of it
    with platform.admin.in_workspace("ws-1") as other:
        assert other.alerts() == []
        with pytest.raises(PlatformError) as refused:
            other.acknowledge_alert(alert.id)
        assert refused.value.status == 404
    assert main(["alerts", "--acknowledge", alert.id, *connection]) == 0
    assert main(["alerts", *connection]) == 0  # open ones only, by default
    assert capsys.readouterr().out.endswith("No alerts.\n")


def test_automatic_responses_revoke_the_device_and_the_token(
    clock: ManualClock,
    tmp_path: Path,
    database_url: str | None,
    devices: list[Device],
) -> None:
    settings = Settings(
        leak_response_shared_credential="revoke_device",  # type: ignore[arg-type]
        leak_response_provisioning_rate="revoke_token",  # type: ignore[arg-type]
        leak_provisioning_floor=10,
    )
    with (
        Platform(
            data_dir=tmp_path / "data", clock=clock, settings=settings, database_url=database_url
        ) as platform,
        httpx.Client(base_url=platform.http_url, timeout=30) as http,
    ):
        pump = provision(platform, "pump-0001")
        connect_from(platform, pump, "127.0.0.1", devices)
        thief = take_over(platform, pump, "127.0.0.2", devices)
        assert thief.disconnected.wait(WAIT), "the revoked device's session stayed open"
        [alert] = platform.admin.alerts(kind="shared_credential")
        assert alert.response is not None and alert.response.startswith("revoke_device")
        assert register(http, pump.rt).status_code == 401  # it must provision again
        assert wait_for(lambda: not platform.admin.get_device("pump-0001").connected)

        # a burst: more than the floor of 10 inits in the window from a new token
        pt = platform.admin.create_provisioning_token("line 2").provisioning_token
        for i in range(1, 12):
            assert init(http, pt, f"valve-{i:04d}").status_code == 200
        [burst] = platform.admin.alerts(kind="provisioning_rate")
        assert burst.evidence["initsInWindow"] == 11
        assert burst.response == "revoke_token: provisioning token revoked"
        assert init(http, pt, "valve-0012").status_code == 401  # the token is revoked

        # the audit trail has both alerts and both responses, by the platform itself
        engine = create_engine(sync_url(platform.settings.database_url))
        try:
            with engine.connect() as conn:
                c = audit_events.c
                audited = conn.execute(
                    select(c.action, c.actor, c.target_id).where(c.target_kind == "alert")
                ).all()
        finally:
            engine.dispose()
        assert sorted((action, actor) for action, actor, _ in audited) == [
            ("alert.auto_response", "system"),
            ("alert.auto_response", "system"),
            ("alert.raised", "system"),
            ("alert.raised", "system"),
        ]
        assert {target for _, _, target in audited} == {alert.id, burst.id}
