"""The platform keeps every connect and disconnect of real devices, and
``connection_intervals`` turns them into the online/offline periods a connectivity fit
takes: their durations are exactly the ManualClock moves between the MQTT events."""

from __future__ import annotations

import pytest

from iiotsim.clock import ManualClock
from iiotsim.errors import PlatformError
from iiotsim.platform import Platform
from iiotsim.sim import connection_intervals

from .brokers import BOTH_BROKERS
from .mqtt import WAIT, Device, provision, wait_for

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)


def connected(platform: Platform, device_id: str, state: bool) -> bool:
    return wait_for(lambda: platform.admin.get_device(device_id).connected is state)


def session(platform: Platform, device_id: str, password: str, devices: list[Device]) -> Device:
    device = Device(platform, device_id, password)
    devices.append(device)
    assert device.connect() == 0
    assert connected(platform, device_id, True)
    return device


@pytest.mark.parametrize("mqtt_broker", BOTH_BROKERS)
def test_connects_and_disconnects_become_intervals_of_the_clock_moves(
    platform: Platform, clock: ManualClock, devices: list[Device]
) -> None:
    pump = provision(platform, "pump-0001")
    valve = provision(platform, "valve-0001")
    clock.advance(3600)  # provisioned, never connected: no interval

    first = session(platform, pump.device_id, pump.password, devices)
    clock.advance(600)
    first.close()
    assert connected(platform, pump.device_id, False)
    clock.advance(300)
    second = session(platform, pump.device_id, pump.password, devices)
    v = session(platform, valve.device_id, valve.password, devices)
    clock.advance(100)
    # a second connection with the same Device ID takes over: the device stays online
    takeover = Device(platform, pump.device_id, pump.password)
    devices.append(takeover)
    assert takeover.connect() == 0
    assert second.disconnected.wait(WAIT)
    second.close()  # no reconnect of the pushed-out client
    assert wait_for(lambda: platform.admin.get_device(pump.device_id).connection_takeovers == 1)
    clock.advance(1100)
    takeover.close()
    assert connected(platform, pump.device_id, False)
    v.close()
    assert connected(platform, valve.device_id, False)
    clock.advance(450)

    events = platform.admin.list_device_connections(pump.device_id)
    assert [(e.connected, e.takeover) for e in events] == [
        (True, False),
        (False, False),
        (True, False),
        (True, True),
        (True, False),
        (False, False),
    ]
    assert [e.seq for e in platform.admin.list_device_connections(pump.device_id, after=events[1].seq, limit=2)] == [e.seq for e in events[2:4]]  # fmt: skip

    intervals = connection_intervals(platform.admin, page_size=2, until=clock.now())
    rows = intervals[["device_id", "state", "duration_s", "censored"]].values.tolist()
    assert rows == [
        ["pump-0001", "online", 600.0, False],
        ["pump-0001", "offline", 300.0, False],
        ["pump-0001", "online", 1200.0, False],
        ["pump-0001", "offline", 450.0, True],
        ["valve-0001", "online", 1200.0, False],
        ["valve-0001", "offline", 450.0, True],
    ]
    assert (intervals["end"] - intervals["start"]).dt.total_seconds().tolist() == [
        r[2] for r in rows
    ]
    only_closed = connection_intervals(platform.admin, ["valve-0001"])
    assert only_closed["state"].tolist() == ["online"]


def test_connection_records_of_an_unknown_device_are_a_404_naming_it(platform: Platform) -> None:
    with pytest.raises(PlatformError) as caught:
        platform.admin.list_device_connections("nope-0001")
    assert caught.value.status == 404 and caught.value.field == "deviceId"
    with pytest.raises(PlatformError) as caught:
        platform.admin.list_device_connections("nope-0001", limit=0)
    assert caught.value.status == 400
