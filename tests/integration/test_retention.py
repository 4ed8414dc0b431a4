"""Retention: messages and connection history older than the settings keep are deleted
on the platform's clock, the rest kept; off by default (``services/retention.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from iiot_server.services import retention
from iiot_server.settings import Settings, SettingsError

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from .mqtt import Device, provision, wait_for

pytestmark = pytest.mark.both_databases

HOUR = 3600.0
DAY = 24 * HOUR


def session(platform: Platform, device_id: str, password: str, *message_ids: str) -> None:
    """Connect, publish ``message_ids`` at QoS 1, disconnect."""
    device = Device(platform, device_id, password)
    try:
        assert device.connect() == 0
        for mid in message_ids:
            device.publish(f"devices/{device_id}/messages/s/mid={mid}", mid, qos=1)
    finally:
        device.close()


def test_what_is_older_than_its_retention_goes_and_the_rest_stays(
    tmp_path: Path, clock: ManualClock, database_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "CHUNK", 2)  # several chunks per pass
    settings = Settings(message_retention=DAY, connection_history_retention=2 * DAY)
    with Platform(
        tmp_path / "data", clock=clock, settings=settings, database_url=database_url
    ) as platform:
        reg = provision(platform, "keep-0001")
        admin = platform.admin

        def message_ids() -> list[str | None]:
            return [m.message_id for m in admin.list_device_messages(reg.device_id)]

        def connections() -> list[bool]:
            return [e.connected for e in admin.list_device_connections(reg.device_id)]

        session(platform, reg.device_id, reg.password, "old-1", "old-2", "old-3", "old-4", "old-5")
        assert wait_for(lambda: len(message_ids()) == 5 and connections() == [True, False])
        clock.advance(12 * HOUR)
        session(platform, reg.device_id, reg.password, "new-1")
        assert wait_for(lambda: len(message_ids()) == 6 and len(connections()) == 4)

        clock.advance(13 * HOUR)  # the first five are 25 h old, new-1 13 h
        assert wait_for(lambda: message_ids() == ["new-1"])
        assert connections() == [True, False, True, False]  # 2 days kept

        clock.advance(24 * HOUR)  # 49 h and 37 h
        assert wait_for(lambda: message_ids() == [] and connections() == [True, False])
        assert admin.get_device(reg.device_id).last_connected_at is not None  # state stays


def test_retention_is_off_by_default(tmp_path: Path, clock: ManualClock) -> None:
    with Platform(tmp_path / "data", clock=clock) as platform:
        assert not platform.services.retention.enabled
        reg = provision(platform, "keep-0002")
        session(platform, reg.device_id, reg.password, "m1")
        assert wait_for(lambda: len(platform.admin.list_device_messages(reg.device_id)) == 1)
        clock.advance(400 * DAY)
        assert len(platform.admin.list_device_messages(reg.device_id)) == 1


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan")])
def test_a_retention_that_is_not_a_positive_duration_is_refused(seconds: float) -> None:
    with pytest.raises(SettingsError, match="message_retention"):
        Settings(database_url="sqlite://", message_retention=seconds)
    with pytest.raises(SettingsError, match="connection_history_retention"):
        Settings(database_url="sqlite://", connection_history_retention=seconds)


def test_retention_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IIOT_MESSAGE_RETENTION", "604800")
    assert Settings.from_environment(database_url="sqlite://").message_retention == 604800.0
    monkeypatch.setenv("IIOT_CONNECTION_HISTORY_RETENTION", "a week")
    with pytest.raises(SettingsError, match="IIOT_CONNECTION_HISTORY_RETENTION"):
        Settings.from_environment(database_url="sqlite://")
