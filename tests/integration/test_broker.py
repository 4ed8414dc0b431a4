"""The broker with real paho clients: auth, ACL, session control, ingest (issue 3)."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

import pytest

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform

from .brokers import BOTH_BROKERS
from .mqtt import WAIT, Device, provision, wait_for

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

both_brokers = pytest.mark.parametrize("mqtt_broker", BOTH_BROKERS)


@pytest.fixture
def connect(platform: Platform, devices: list[Device]) -> Callable[..., Device]:
    def open_device(client_id: str, password: str | None, username: str | None = "") -> Device:
        device = Device(platform, client_id, password, username)
        devices.append(device)
        return device

    return open_device


def stored(platform: Platform, device_id: str) -> list[tuple[str, str | None, str]]:
    return [
        (m.stream, m.message_id, m.payload) for m in platform.admin.list_device_messages(device_id)
    ]


@both_brokers
def test_registered_device_publishes_and_messages_are_stored_once(
    platform: Platform, connect: Callable[..., Device]
) -> None:
    reg = provision(platform, "pump-0001")
    device = connect(reg.device_id, reg.password)
    assert device.connect() == 0
    device.publish("devices/pump-0001/messages/vibration/mid=m1", b"0.42", qos=1)
    device.publish("devices/pump-0001/messages/vibration/mid=m1", b"0.42", qos=1)  # redelivery
    device.publish("devices/pump-0001/messages/temperature", b"21.5", qos=0)
    assert wait_for(lambda: len(stored(platform, "pump-0001")) == 2)
    assert stored(platform, "pump-0001") == [
        ("vibration", "m1", "0.42"),
        ("temperature", None, "21.5"),
    ]
    # on mosquitto: recorded from its connection log (mosquitto_broker.py), a moment later
    assert wait_for(lambda: platform.admin.get_device("pump-0001").connected is True)
    record = platform.admin.get_device("pump-0001")
    assert record.connected is True
    assert record.last_connected_at is not None


@both_brokers
@pytest.mark.parametrize(
    ("client_id", "password", "username"),
    [
        ("pump-0002", "mp_wrong", ""),
        ("pump-0002", None, None),  # anonymous
        ("pump-9999", "<password>", ""),  # someone else's credentials
        ("pump-0002", "<password>", "pump-9999"),  # username must be the Device ID
    ],
)
def test_bad_credentials_are_refused(
    platform: Platform,
    connect: Callable[..., Device],
    client_id: str,
    password: str | None,
    username: str | None,
) -> None:
    reg = provision(platform, "pump-0002")
    if password == "<password>":
        password = reg.password
    assert connect(client_id, password, username).connect() != 0


@both_brokers
def test_expired_token_cannot_connect_and_live_session_is_ended(
    platform: Platform, clock: ManualClock, connect: Callable[..., Device]
) -> None:
    reg = provision(platform, "meter-0001", max_registration_token_lifetime=3600)
    device = connect(reg.device_id, reg.password)
    assert device.connect() == 0
    clock.advance(3600)
    assert device.disconnected.wait(WAIT)
    assert connect(reg.device_id, reg.password).connect() != 0


def test_device_cannot_use_another_devices_topics(
    platform: Platform, connect: Callable[..., Device]
) -> None:
    a, b = provision(platform, "dev-aaaa"), provision(platform, "dev-bbbb")
    device_a = connect(a.device_id, a.password)
    assert device_a.connect() == 0
    assert device_a.subscribe("devices/dev-bbbb/twin/desired") == [0x80]
    assert device_a.subscribe("devices/+/twin/desired") == [0x80]
    assert device_a.subscribe("#") == [0x80]
    assert device_a.subscribe("devices/dev-aaaa/twin/+") == [1]
    device_a.publish("devices/dev-bbbb/messages/default/mid=forged", b"x")
    device_a.publish("devices/dev-aaaa/messages/default/mid=own", b"y")
    assert wait_for(lambda: len(stored(platform, "dev-aaaa")) == 1)
    assert stored(platform, "dev-bbbb") == []
    # a device may not publish on platform-to-device topics either
    device_a.publish("devices/dev-aaaa/twin/desired", b"{}")
    assert device_a.messages.empty()
    del b


@both_brokers
def test_revoked_device_is_disconnected_and_refused(
    platform: Platform, connect: Callable[..., Device]
) -> None:
    reg = provision(platform, "valve-0001")
    device = connect(reg.device_id, reg.password)
    assert device.connect() == 0
    started = time.monotonic()
    platform.admin.revoke_device("valve-0001")
    assert device.disconnected.wait(WAIT)
    took = time.monotonic() - started
    print(f"revoke -> disconnect: {1000 * took:.0f} ms")  # figure for the closing note
    assert connect(reg.device_id, reg.password).connect() != 0
    assert wait_for(lambda: platform.admin.get_device("valve-0001").connected is False)


@both_brokers
def test_deleted_device_is_disconnected(platform: Platform, connect: Callable[..., Device]) -> None:
    reg = provision(platform, "valve-0002")
    device = connect(reg.device_id, reg.password)
    assert device.connect() == 0
    platform.admin.delete_device("valve-0002")
    assert device.disconnected.wait(WAIT)


@both_brokers
def test_refreshed_tokens_session_ends_with_the_grace_period(
    platform: Platform, clock: ManualClock, connect: Callable[..., Device]
) -> None:
    import httpx

    reg = provision(platform, "valve-0003")
    device = connect(reg.device_id, reg.password)
    assert device.connect() == 0
    with httpx.Client(base_url=platform.http_url) as http:
        refreshed = http.put(
            "/devices/registration-tokens/refresh",
            json={"registrationToken": reg.rt},
            headers={"Authorization": f"DeviceToken {reg.pt}"},
        )
    assert refreshed.status_code == 201
    clock.advance(platform.settings.refresh_grace_period - 1)
    assert not device.disconnected.wait(0.2)
    clock.advance(1)
    assert device.disconnected.wait(WAIT)


@both_brokers
def test_second_connection_takes_over_and_is_recorded(
    platform: Platform, connect: Callable[..., Device]
) -> None:
    reg = provision(platform, "twin-0001")
    first = connect(reg.device_id, reg.password)
    assert first.connect() == 0
    second = connect(reg.device_id, reg.password)
    assert second.connect() == 0
    assert first.disconnected.wait(WAIT)
    assert not second.disconnected.is_set()
    # on mosquitto: recorded from its connection log (mosquitto_broker.py), a moment later
    assert wait_for(lambda: platform.admin.get_device("twin-0001").connection_takeovers == 1)
    record = platform.admin.get_device("twin-0001")
    assert record.connection_takeovers == 1
    assert record.last_takeover_at is not None
    assert record.connected is True


def test_no_retained_message_of_another_device(
    platform: Platform, connect: Callable[..., Device]
) -> None:
    """amqtt flaw (a): a newcomer was sent retained messages matching other clients'
    filters, without the topic check."""
    a, b = provision(platform, "dev-reta"), provision(platform, "dev-retb")
    device_a = connect(a.device_id, a.password)
    assert device_a.connect() == 0
    assert device_a.subscribe("devices/dev-reta/#") == [1]
    device_a.publish("devices/dev-reta/messages/secret/mid=r1", b"a's secret", retain=True)
    device_b = connect(b.device_id, b.password)
    assert device_b.connect() == 0
    assert device_b.subscribe("devices/dev-retb/#") == [1]
    # a's own subscription still gets it (the message was retained), b's does not
    received: list[str] = []
    while True:
        try:
            received.append(device_b.messages.get(timeout=1.0).topic)
        except queue.Empty:
            break
    assert received == []


@both_brokers
def test_failed_login_with_victims_id_leaves_victim_working(
    platform: Platform, connect: Callable[..., Device]
) -> None:
    """amqtt flaw (b): a CONNECT with a victim's client id and wrong credentials deleted the
    victim's session and subscriptions before authentication."""
    victim = provision(platform, "victim-01")
    device = connect(victim.device_id, victim.password)
    assert device.connect() == 0
    assert device.subscribe("devices/victim-01/twin/desired") == [1]
    attacker = connect(victim.device_id, "mp_guess")
    assert attacker.connect() != 0
    assert not device.disconnected.is_set()
    broker = platform.services.broker
    platform.runner.call(
        broker.internal_message_broadcast("devices/victim-01/twin/desired", b'{"$version": 1}', 1)
    )
    received = device.messages.get(timeout=WAIT)
    assert received.topic == "devices/victim-01/twin/desired"
    assert platform.admin.get_device("victim-01").connection_takeovers == 0


def test_restart_keeps_messages(
    tmp_path: object, clock: ManualClock, database_url: str | None
) -> None:
    from pathlib import Path

    data = Path(str(tmp_path)) / "kept"
    with Platform(
        data_dir=data, clock=clock, admin_key="ak_keep", database_url=database_url
    ) as first:
        reg = provision(first, "keep-0001")
        device = Device(first, reg.device_id, reg.password)
        assert device.connect() == 0
        device.publish("devices/keep-0001/messages/default/mid=k1", b"kept")
        assert wait_for(lambda: len(stored(first, "keep-0001")) == 1)
        device.close()
    with Platform(
        data_dir=data, clock=clock, admin_key="ak_keep", database_url=database_url
    ) as second:
        assert stored(second, "keep-0001") == [("default", "k1", "kept")]
