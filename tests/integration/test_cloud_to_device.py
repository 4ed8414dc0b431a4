"""Cloud-to-device messages (issue 13): queued over the admin API, sent at QoS 1 on
``devices/{id}/messages/devicebound/{property bag}`` once the device listens, and
``delivered`` only at its PUBACK; in both dialects, with IoT Hub's limits."""

from __future__ import annotations

import shutil
import subprocess
from urllib.parse import parse_qsl

import httpx
import paho.mqtt.client as mqtt
import pytest

from iiotsim.clock import ManualClock
from iiotsim.errors import PlatformError
from iiotsim.platform import Platform

from .mqtt import WAIT, Device, provision, wait_for
from .test_broker import stored
from .test_iot_hub_dialect import hub_credentials


def states(platform: Platform, device_id: str) -> list[str]:
    return [m.state for m in platform.admin.list_cloud_to_device_messages(device_id)]


def listening(platform: Platform, device_id: str, topic_id: str | None = None) -> Device:
    """The device connected (native dialect) and subscribed to its cloud-to-device topic."""
    reg = provision(platform, device_id)
    device = Device(platform, device_id, reg.password)
    assert device.connect() == 0
    assert device.subscribe(f"devices/{topic_id or device_id}/messages/devicebound/#") == [1]
    return device


def bag(message: mqtt.MQTTMessage, device_id: str) -> dict[str, str]:
    prefix = f"devices/{device_id}/messages/devicebound/"
    assert message.topic.startswith(prefix), message.topic
    return dict(parse_qsl(message.topic[len(prefix) :]))


def test_a_listening_device_receives_the_message_with_its_properties_and_acknowledges_it(
    platform: Platform, devices: list[Device]
) -> None:
    device = listening(platform, "c2d-0001")
    devices.append(device)
    sent = platform.admin.send_to_device("c2d-0001", "reboot", properties={"command": "reboot"})
    assert sent.state == "pending"
    received = device.messages.get(timeout=WAIT)
    assert received.payload == b"reboot"
    assert received.qos == 1
    assert bag(received, "c2d-0001") == {
        "$.mid": sent.message_id,
        "$.to": "/devices/c2d-0001/messages/deviceBound",
        "command": "reboot",
    }
    assert wait_for(lambda: states(platform, "c2d-0001") == ["delivered"])
    [listed] = platform.admin.list_cloud_to_device_messages("c2d-0001")
    assert listed.delivered_at is not None and listed.payload == "reboot"


def test_messages_wait_for_an_offline_device_and_arrive_in_order_once_it_subscribes(
    platform: Platform, devices: list[Device]
) -> None:
    reg = provision(platform, "c2d-0002")
    for n in range(3):
        platform.admin.send_to_device("c2d-0002", bytes([0, n, 255]))  # binary: sent as base64
    assert states(platform, "c2d-0002") == ["pending"] * 3
    device = Device(platform, "c2d-0002", reg.password)
    devices.append(device)
    assert device.connect() == 0
    assert device.messages.empty()  # connected but not listening: nothing sent yet
    assert device.subscribe("devices/c2d-0002/#") == [1]  # the device's whole namespace
    payloads = [device.messages.get(timeout=WAIT).payload for _ in range(3)]
    assert payloads == [bytes([0, n, 255]) for n in range(3)]
    assert wait_for(lambda: states(platform, "c2d-0002") == ["delivered"] * 3)


def test_an_expired_message_is_never_sent(
    platform: Platform, clock: ManualClock, devices: list[Device]
) -> None:
    provision(platform, "c2d-0003")
    platform.admin.send_to_device("c2d-0003", "stale", time_to_live=60)
    clock.advance(61)
    assert states(platform, "c2d-0003") == ["expired"]
    platform.admin.send_to_device("c2d-0003", "fresh")
    reg = provision(platform, "c2d-0003")  # a new RT for the same device
    device = Device(platform, "c2d-0003", reg.password)
    devices.append(device)
    assert device.connect() == 0
    device.subscribe("devices/c2d-0003/messages/devicebound/#")
    assert device.messages.get(timeout=WAIT).payload == b"fresh"
    assert wait_for(lambda: states(platform, "c2d-0003") == ["expired", "delivered"])
    assert device.messages.empty()


def test_another_device_cannot_listen_and_a_device_cannot_publish_on_the_cloud_to_device_topic(
    platform: Platform, devices: list[Device]
) -> None:
    victim = listening(platform, "c2d-victim")
    devices.append(victim)
    thief_reg = provision(platform, "c2d-thief")
    thief = Device(platform, "c2d-thief", thief_reg.password)
    devices.append(thief)
    assert thief.connect() == 0
    assert thief.subscribe("devices/c2d-victim/messages/devicebound/#") == [0x80]
    assert thief.subscribe("devices/+/messages/devicebound/#") == [0x80]
    # a device's own devicebound topic is not a telemetry stream it may publish on
    victim.publish("devices/c2d-victim/messages/devicebound", b"forged", qos=1)
    victim.publish("devices/c2d-victim/messages/marker", b"m", qos=1)
    assert wait_for(lambda: len(stored(platform, "c2d-victim")) == 1)
    assert [s for s, _, _ in stored(platform, "c2d-victim")] == ["marker"]
    platform.admin.send_to_device("c2d-victim", "for the victim only")
    assert victim.messages.get(timeout=WAIT).payload == b"for the victim only"
    assert thief.messages.empty()


def test_the_iot_hub_dialect_receives_on_its_workspace_topic(
    platform: Platform, devices: list[Device]
) -> None:
    reg = provision(platform, "c2d-hub")
    creds = hub_credentials(platform, reg)
    device = Device(platform, creds.client_id, creds.password, creds.username)
    devices.append(device)
    assert device.connect() == 0
    assert device.subscribe("devices/default:c2d-hub/messages/devicebound/#") == [1]
    sent = platform.admin.send_to_device("c2d-hub", '{"fan": "on"}', properties={"k": "v"})
    received = device.messages.get(timeout=WAIT)
    assert received.payload == b'{"fan": "on"}'
    assert bag(received, "default:c2d-hub")["$.mid"] == sent.message_id
    assert wait_for(lambda: states(platform, "c2d-hub") == ["delivered"])


@pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="mosquitto-clients missing")
def test_mosquitto_sub_in_the_iot_hub_dialect_receives_and_acknowledges(
    platform: Platform,
) -> None:
    """Another project's client: Debian's ``mosquitto_sub`` with the SAS from register."""
    reg = provision(platform, "c2d-mosq")
    creds = hub_credentials(platform, reg)
    topic = "devices/default:c2d-mosq/messages/devicebound/#"
    sub = subprocess.Popen(
        [
            *("mosquitto_sub", "-h", platform.mqtt_host, "-p", str(platform.mqtt_port)),
            *("-V", "mqttv311", "-i", creds.client_id, "-u", creds.username),
            *("-P", creds.password, "-q", "1", "-t", topic, "-v", "-C", "1", "-W", "30"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    broker = platform.services.broker
    assert wait_for(lambda: topic in broker.subscriptions)
    platform.admin.send_to_device("c2d-mosq", "hello from the cloud", properties={"n": "1"})
    out, err = sub.communicate(timeout=60)
    assert sub.returncode == 0, err
    received_topic, payload = out.strip().split(" ", 1)
    assert payload == "hello from the cloud"
    assert dict(parse_qsl(received_topic.rsplit("/", 1)[1]))["n"] == "1"
    assert wait_for(lambda: states(platform, "c2d-mosq") == ["delivered"])


def test_a_device_that_does_not_acknowledge_keeps_the_message_pending(
    platform: Platform, devices: list[Device]
) -> None:
    """Delivered means acknowledged: a client that takes the PUBLISH but never sends its
    PUBACK (paho with manual acknowledgement) leaves the message pending, and it is sent
    again on its next session."""
    reg = provision(platform, "c2d-0004")
    silent = Device(platform, "c2d-0004", reg.password)
    devices.append(silent)
    silent.client.manual_ack_set(True)
    assert silent.connect() == 0
    silent.subscribe("devices/c2d-0004/messages/devicebound/#")
    platform.admin.send_to_device("c2d-0004", "once more")
    assert silent.messages.get(timeout=WAIT).payload == b"once more"
    assert states(platform, "c2d-0004") == ["pending"]
    silent.close()
    again = Device(platform, "c2d-0004", reg.password)
    devices.append(again)
    assert again.connect() == 0
    again.subscribe("devices/c2d-0004/messages/devicebound/#")
    assert again.messages.get(timeout=WAIT).payload == b"once more"
    assert wait_for(lambda: states(platform, "c2d-0004") == ["delivered"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"payload": "%%%", "encoding": "base64"}, "payload"),
        ({"payload": "x", "properties": {"$.mid": "forged"}}, "properties"),
        ({"payload": "x", "timeToLiveSeconds": 0}, "timeToLiveSeconds"),
        ({"payload": "x", "ttl": 5}, "ttl"),
        ({"payload": "x" * (64 * 1024 + 1)}, "payload"),
        ({}, "payload"),
    ],
    ids=["bad-base64", "system-property", "zero-ttl", "unknown-field", "too-large", "missing"],
)
def test_bad_input_is_a_400_naming_the_field(
    platform: Platform, body: dict[str, object], field: str
) -> None:
    provision(platform, "c2d-0005")
    headers = {"Authorization": f"Bearer {platform.admin_key}"}
    with httpx.Client(base_url=platform.http_url, headers=headers, timeout=30) as http:
        answer = http.post("/api/v1/devices/c2d-0005/cloud-to-device-messages", json=body)
    assert answer.status_code == 400, answer.text
    assert field in answer.text
    assert platform.admin.list_cloud_to_device_messages("c2d-0005") == []


def test_unknown_device_full_queue_and_deleted_device(platform: Platform) -> None:
    with pytest.raises(PlatformError) as unknown:
        platform.admin.send_to_device("c2d-nobody", "x")
    assert unknown.value.status == 404
    provision(platform, "c2d-0006")
    for n in range(50):
        platform.admin.send_to_device("c2d-0006", str(n))
    with pytest.raises(PlatformError) as full:
        platform.admin.send_to_device("c2d-0006", "one too many")
    assert full.value.status == 429
    assert len(platform.admin.list_cloud_to_device_messages("c2d-0006", limit=1000)) == 50
    platform.admin.delete_device("c2d-0006")
    provision(platform, "c2d-0006")  # the same Device ID again: a new device
    assert platform.admin.list_cloud_to_device_messages("c2d-0006") == []
