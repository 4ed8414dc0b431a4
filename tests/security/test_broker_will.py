"""Last Wills pass the device's topic ACL (issue 10, item 1).

The attack: device A, with its own valid credentials, CONNECTs with a Will on device B's
``twin/res`` (retained) or ``twin/desired`` and drops TCP without DISCONNECT; amqtt
published (and retained) the Will with no topic check, and B's SDK applied it.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Callable

import pytest

from iiotsim.platform import Platform
from tests.integration.mqtt import WAIT, Device, Registered, provision, publish_probe, wait_for

from .raw_mqtt import DISCONNECT, abort, connect_packet, open_socket, read_connack

FORGED = json.dumps({"desired": {"setpoint": 9999, "$version": 1000}, "reported": {}}).encode()


@pytest.fixture
def connect(platform: Platform, devices: list[Device]) -> Callable[[Registered], Device]:
    def open_device(reg: Registered) -> Device:
        device = Device(platform, reg.device_id, reg.password)
        devices.append(device)
        assert device.connect() == 0
        return device

    return open_device


def drained(device: Device, timeout: float = 0.5) -> list[tuple[str, bytes]]:
    received: list[tuple[str, bytes]] = []
    while True:
        try:
            msg = device.messages.get(timeout=timeout)
        except queue.Empty:
            return received
        received.append((msg.topic, bytes(msg.payload)))


def die_with_will(platform: Platform, attacker: Registered, **will: object) -> int | None:
    """CONNECT as ``attacker`` with a Will, then drop TCP without DISCONNECT; returns the
    CONNACK code and waits until the broker handled the drop (a Will is queued before the
    disconnection is recorded)."""
    sock = open_socket(platform.mqtt_host, platform.mqtt_port)
    sock.sendall(connect_packet(attacker.device_id, attacker.device_id, attacker.password, **will))  # type: ignore[arg-type]
    code = read_connack(sock)
    abort(sock)
    if code == 0:
        assert wait_for(
            lambda: platform.admin.get_device(attacker.device_id).last_disconnected_at is not None
        )
    return code


def test_will_on_another_devices_twin_is_refused_and_never_delivered_or_retained(
    platform: Platform, connect: Callable[[Registered], Device]
) -> None:
    attacker, victim = provision(platform, "will-atk-1"), provision(platform, "will-vic-1")
    b = connect(victim)
    assert b.subscribe(f"devices/{victim.device_id}/twin/+") == [1]

    res = die_with_will(
        platform,
        attacker,
        will_topic=f"devices/{victim.device_id}/twin/res",
        will_message=FORGED,
        will_qos=1,
        will_retain=True,
    )
    desired = die_with_will(
        platform,
        attacker,
        will_topic=f"devices/{victim.device_id}/twin/desired",
        will_message=FORGED,
        will_qos=1,
    )
    # a real desired patch after the drops: B gets it, and nothing else before it
    platform.admin.update_desired_properties(victim.device_id, {"setpoint": 20})
    first = b.messages.get(timeout=WAIT)
    assert first.topic == f"devices/{victim.device_id}/twin/desired"
    assert json.loads(first.payload)["setpoint"] == 20
    assert drained(b) == []

    # nothing retained for a fresh subscriber
    broker = platform.services.broker
    assert [t for t in broker.retained_messages if t.startswith("devices/")] == []
    b.close()
    fresh = connect(victim)
    assert fresh.subscribe(f"devices/{victim.device_id}/#") == [1]
    assert drained(fresh, timeout=1.0) == []
    # refused at CONNECT: "not authorized" (return code 5), see PlatformBroker
    assert (res, desired) == (5, 5)


def test_will_with_retain_is_refused_even_on_own_topic(platform: Platform) -> None:
    device = provision(platform, "will-own-1")
    code = die_with_will(
        platform,
        device,
        will_topic=f"devices/{device.device_id}/messages/status",
        will_message=b"offline",
        will_retain=True,
    )
    assert code == 5
    assert list(platform.services.broker.retained_messages) == []


def test_will_on_own_telemetry_is_stored_like_telemetry_when_the_device_dies(
    platform: Platform,
) -> None:
    device = provision(platform, "will-own-2")
    topic = f"devices/{device.device_id}/messages/status/mid=will-1"
    assert die_with_will(platform, device, will_topic=topic, will_message=b"offline") == 0
    assert wait_for(
        lambda: (
            [
                (m.stream, m.message_id, m.payload)
                for m in platform.admin.list_device_messages(device.device_id)
            ]
            == [("status", "will-1", "offline")]
        )
    )


def test_will_is_not_sent_after_a_clean_disconnect(platform: Platform) -> None:
    device = provision(platform, "will-own-3")
    sock = open_socket(platform.mqtt_host, platform.mqtt_port)
    sock.sendall(
        connect_packet(
            device.device_id,
            device.device_id,
            device.password,
            will_topic=f"devices/{device.device_id}/messages/status",
            will_message=b"offline",
        )
    )
    assert read_connack(sock) == 0
    sock.sendall(DISCONNECT)
    sock.close()
    assert wait_for(
        lambda: platform.admin.get_device(device.device_id).last_disconnected_at is not None
    )
    # a later, ordinary message is stored; the Will never is
    publish_probe(platform, device.device_id, device.password)
    messages = platform.admin.list_device_messages(device.device_id)
    assert [m.stream for m in messages] == ["probe"]


def test_reconnect_to_a_persistent_session_cannot_bring_a_forbidden_will(
    platform: Platform, connect: Callable[[Registered], Device]
) -> None:
    """amqtt copies a re-CONNECT's Will onto the existing persistent session (and not its
    retain flag): the second CONNECT's Will must be checked as its own."""
    attacker, victim = provision(platform, "will-atk-2"), provision(platform, "will-vic-2")
    b = connect(victim)
    assert b.subscribe(f"devices/{victim.device_id}/twin/+") == [1]
    first = open_socket(platform.mqtt_host, platform.mqtt_port)
    first.sendall(
        connect_packet(
            attacker.device_id, attacker.device_id, attacker.password, clean_session=False
        )
    )
    assert read_connack(first) == 0
    first.sendall(DISCONNECT)
    first.close()
    assert wait_for(
        lambda: platform.admin.get_device(attacker.device_id).last_disconnected_at is not None
    )
    for will in (
        {"will_topic": f"devices/{victim.device_id}/twin/desired", "will_message": FORGED},
        {"will_topic": f"devices/{attacker.device_id}/messages/s", "will_retain": True},
    ):
        sock = open_socket(platform.mqtt_host, platform.mqtt_port)
        sock.sendall(
            connect_packet(
                attacker.device_id,
                attacker.device_id,
                attacker.password,
                clean_session=False,
                **will,  # type: ignore[arg-type]
            )
        )
        assert read_connack(sock) == 5
        abort(sock)
    platform.admin.update_desired_properties(victim.device_id, {"setpoint": 21})
    assert b.messages.get(timeout=WAIT).topic == f"devices/{victim.device_id}/twin/desired"
    assert drained(b) == []
    assert list(platform.services.broker.retained_messages) == []


def test_refused_connect_leaves_the_live_sessions_will_alone(
    platform: Platform, connect: Callable[[Registered], Device]
) -> None:
    """A CONNECT with a device's id and wrong credentials changed the device's persistent
    session (its Will, keep-alive and password) before authentication."""
    device = provision(platform, "will-own-4")
    sock = open_socket(platform.mqtt_host, platform.mqtt_port)
    sock.sendall(
        connect_packet(device.device_id, device.device_id, device.password, clean_session=False)
    )
    assert read_connack(sock) == 0
    forged = open_socket(platform.mqtt_host, platform.mqtt_port)
    forged.sendall(
        connect_packet(
            device.device_id,
            device.device_id,
            "mp_wrong",
            clean_session=False,
            will_topic=f"devices/{device.device_id}/messages/forged",
            will_message=b"forged",
        )
    )
    assert read_connack(forged) == 5
    forged.close()
    session, _ = platform.services.broker.sessions[device.device_id]
    assert not session.will_flag
    abort(sock)
    assert wait_for(
        lambda: platform.admin.get_device(device.device_id).last_disconnected_at is not None
    )
    publish_probe(platform, device.device_id, device.password)
    assert [m.stream for m in platform.admin.list_device_messages(device.device_id)] == ["probe"]
