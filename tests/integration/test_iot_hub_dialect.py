"""The IoT Hub MQTT dialect on the broker (issue 13), as Spotflow's SDK speaks it: client id
``<workspace>:<device>``, username ``<host>/<workspace>:<device>/?api-version=2018-06-30``,
password the SAS from the register answer; telemetry on
``devices/<workspace>:<device>/messages/events/<property bag>``. The same device, ACL,
revocation switch and takeover rule as the native dialect."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from iiotsim.clock import ManualClock
from iiotsim.platform import SPOTFLOW_MQTT_PORT, Platform, port_is_free

from ..security.raw_mqtt import abort, connect_packet, open_socket, read_connack
from ..server.test_register_spotflow_shape import expected_signature
from .mqtt import WAIT, Device, Registered, provision, wait_for
from .test_broker import stored

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

API_VERSION = "/?api-version=2018-06-30"
NOT_AUTHORIZED = 135
"""CONNACK return code 5 "not authorized", as paho's v2 callbacks report it (0x87)."""


@dataclass
class HubCredentials:
    """What Spotflow's SDK takes from the register answer for its CONNECT."""

    client_id: str
    username: str
    password: str
    host: str


def hub_credentials(platform: Platform, reg: Registered) -> HubCredentials:
    """Register again with the RT (as the SDK does) and read the connection string."""
    with httpx.Client(base_url=platform.http_url, timeout=30) as http:
        answer = http.put(
            "/devices/register",
            json={"connectionStringType": "SharedAccessSignature"},
            headers={"Authorization": f"DeviceToken {reg.rt}"},
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    parts = dict(p.split("=", 1) for p in body["connectionString"].split(";"))
    host, client_id = body["iotHubHostName"], parts["DeviceId"]
    return HubCredentials(
        client_id, f"{host}/{client_id}{API_VERSION}", parts["SharedAccessSignature"], host
    )


@pytest.fixture
def hub_connect(platform: Platform, devices: list[Device]) -> Callable[..., Device]:
    def open_device(creds: HubCredentials, **changes: str) -> Device:
        fields = {"client_id": creds.client_id, "username": creds.username} | changes
        password = changes.get("password", creds.password)
        device = Device(platform, fields["client_id"], password, fields["username"])
        devices.append(device)
        return device

    return open_device


def test_a_sas_connect_sends_telemetry_stored_once_with_stream_and_id_from_the_property_bag(
    platform: Platform, hub_connect: Callable[..., Device]
) -> None:
    reg = provision(platform, "hub-0001")
    creds = hub_credentials(platform, reg)
    assert creds.client_id == "default:hub-0001"
    device = hub_connect(creds)
    assert device.connect() == 0
    topic = "devices/default:hub-0001/messages/events/"
    bag = "stream-group-name=plant&stream-name=vibration&message-id=m%3A1"
    device.publish(topic + bag, b"0.42", qos=1)
    device.publish(topic + bag, b"0.42", qos=1)  # a resend: de-duplicated like a native mid
    device.publish(topic, b"no properties", qos=1)
    assert wait_for(lambda: len(stored(platform, "hub-0001")) == 2)
    assert sorted(stored(platform, "hub-0001"), key=lambda m: m[2]) == [
        ("vibration", "m:1", "0.42"),
        ("default", None, "no properties"),
    ]
    assert wait_for(lambda: platform.admin.get_device("hub-0001").connected is True)


def test_refused_property_bags_and_other_devices_topics_are_not_stored(
    platform: Platform, hub_connect: Callable[..., Device]
) -> None:
    reg, other = provision(platform, "hub-0002"), provision(platform, "hub-0003")
    device = hub_connect(hub_credentials(platform, reg))
    assert device.connect() == 0
    device.publish("devices/default:hub-0003/messages/events/stream-name=s", b"forged", qos=1)
    device.publish("devices/hub-0003/messages/s", b"forged", qos=1)
    device.publish("devices/default:hub-0002/messages/events/content-encoding=br", b"?", qos=1)
    device.publish("devices/default:hub-0002/messages/events/stream-name=a%20b", b"bad", qos=1)
    device.publish("devices/default:hub-0002/messages/events/stream-name=last", b"ok", qos=1)
    assert wait_for(lambda: stored(platform, "hub-0002") != [])
    assert stored(platform, "hub-0002") == [("last", None, "ok")]
    assert stored(platform, other.device_id) == []


def test_wrong_signature_expired_sas_and_another_devices_id_are_refused(
    platform: Platform, hub_connect: Callable[..., Device], clock: ManualClock
) -> None:
    reg, other = provision(platform, "hub-0004"), provision(platform, "hub-0005")
    creds = hub_credentials(platform, reg)
    sig = re.search(r"sig=([^&]+)", creds.password)
    assert sig is not None
    wrong = creds.password.replace(sig.group(1), "A" * len(sig.group(1)))
    assert hub_connect(creds, password=wrong).connect() == NOT_AUTHORIZED

    # correctly signed under the device's key, but expired
    sr = creds.password.split("sr=", 1)[1].split("&", 1)[0]
    past = str(int(clock.now().timestamp()) - 1)
    signature = quote(expected_signature(platform, reg.device_id, sr, past), safe="")
    expired = f"SharedAccessSignature sr={sr}&sig={signature}&se={past}"
    assert hub_connect(creds, password=expired).connect() == NOT_AUTHORIZED
    soon = str(int(clock.now().timestamp()) + 60)  # the same signing, unexpired: accepted
    signature = quote(expected_signature(platform, reg.device_id, sr, soon), safe="")
    fresh = hub_connect(creds, password=f"SharedAccessSignature sr={sr}&sig={signature}&se={soon}")
    assert fresh.connect() == 0
    fresh.close()

    # this device's SAS under another device's id, and a native id with the SAS
    other_id = f"default:{other.device_id}"
    other_username = f"{creds.host}/{other_id}{API_VERSION}"
    assert (
        hub_connect(creds, client_id=other_id, username=other_username).connect() == NOT_AUTHORIZED
    )
    assert hub_connect(creds, client_id=reg.device_id).connect() == NOT_AUTHORIZED
    assert hub_connect(creds).connect() == 0  # the right one still works


def test_revocation_ends_a_hub_session_and_the_sas_dies_with_the_device(
    platform: Platform, hub_connect: Callable[..., Device]
) -> None:
    reg = provision(platform, "hub-0006")
    creds = hub_credentials(platform, reg)
    device = hub_connect(creds)
    assert device.connect() == 0
    platform.admin.revoke_device(reg.device_id)
    assert device.disconnected.wait(WAIT)
    assert hub_connect(creds).connect() == NOT_AUTHORIZED


def test_the_sas_ends_with_its_registration_token(
    platform: Platform, hub_connect: Callable[..., Device], clock: ManualClock
) -> None:
    reg = provision(platform, "hub-0007", max_registration_token_lifetime=3600)
    device = hub_connect(hub_credentials(platform, reg))
    assert device.connect() == 0
    clock.advance(3601)
    assert device.disconnected.wait(WAIT)


def test_one_session_per_device_across_both_dialects(
    platform: Platform, hub_connect: Callable[..., Device], devices: list[Device]
) -> None:
    reg = provision(platform, "hub-0008")
    native = Device(platform, reg.device_id, reg.password)
    devices.append(native)
    assert native.connect() == 0
    hub = hub_connect(hub_credentials(platform, reg))
    assert hub.connect() == 0
    assert native.disconnected.wait(WAIT)  # the newcomer takes over, whatever its dialect
    assert not hub.disconnected.is_set()
    assert platform.admin.get_device(reg.device_id).connection_takeovers == 1


def test_a_hub_will_on_its_own_telemetry_is_stored_and_on_another_device_refused(
    platform: Platform,
) -> None:
    reg, other = provision(platform, "hub-0009"), provision(platform, "hub-0010")
    creds = hub_credentials(platform, reg)

    def die_with_will(will_topic: str) -> int | None:
        sock = open_socket(platform.mqtt_host, platform.mqtt_port)
        sock.sendall(
            connect_packet(
                creds.client_id,
                creds.username,
                creds.password,
                will_topic=will_topic,
                will_message=b"died",
            )
        )
        code = read_connack(sock)
        abort(sock)
        return code

    forged = "devices/default:hub-0010/messages/events/stream-name=w"
    assert die_with_will(forged) == 5
    assert die_with_will("devices/default:hub-0009/messages/events/stream-name=w") == 0
    assert wait_for(lambda: stored(platform, reg.device_id) == [("w", None, "died")])
    assert stored(platform, other.device_id) == []


def test_a_tls_platform_listens_for_mqtt_on_8883_as_spotflows_sdk_requires(
    tmp_path: Path,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    spotflow_port: int,
) -> None:
    with Platform(data_dir=tmp_path / "data", clock=clock, tls=True) as tls:
        assert tls.mqtt_port == SPOTFLOW_MQTT_PORT
        assert tls.ca_cert_path is not None
        monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_cert_path))  # for httpx, as for the SDK
        creds = hub_credentials(tls, provision(tls, "hub-8883"))
        device = Device(tls, creds.client_id, creds.password, creds.username)
        device.client.tls_set(ca_certs=str(tls.ca_cert_path))
        try:  # what Spotflow's SDK does: MQTT over TLS to 8883 of iotHubHostName
            assert (creds.host, device.port) == ("127.0.0.1", SPOTFLOW_MQTT_PORT)
            assert device.connect() == 0
        finally:
            device.close()


def test_a_tls_platform_warns_when_8883_is_taken_and_listens_elsewhere(
    tmp_path: Path,
    clock: ManualClock,
    spotflow_port: int,
) -> None:
    holder = None
    if port_is_free("127.0.0.1", SPOTFLOW_MQTT_PORT):  # take it, so it is taken either way
        holder = socket.create_server(("127.0.0.1", SPOTFLOW_MQTT_PORT))
    try:
        tls = Platform(data_dir=tmp_path / "data", clock=clock, tls=True)
        with pytest.warns(RuntimeWarning, match="real Spotflow SDK will not connect"):
            tls.start()
        try:
            assert tls.mqtt_port != SPOTFLOW_MQTT_PORT
            assert tls.mqtt_port > 0
        finally:
            tls.stop()
    finally:
        if holder is not None:
            holder.close()


def test_an_explicit_mqtt_port_is_kept_with_tls(tmp_path: Path, clock: ManualClock) -> None:
    with Platform(data_dir=tmp_path / "data", clock=clock, tls=True, mqtt_port=0) as tls:
        assert tls.mqtt_port != SPOTFLOW_MQTT_PORT


def next_message(device: Device) -> tuple[str, bytes]:
    msg = device.messages.get(timeout=WAIT)
    return msg.topic, bytes(msg.payload)


def test_the_twin_over_iothub_topics_as_spotflows_sdk_uses_it(
    platform: Platform, hub_connect: Callable[..., Device]
) -> None:
    reg, other = provision(platform, "hub-twin-1"), provision(platform, "hub-twin-2")
    platform.admin.update_desired_properties(reg.device_id, {"setpoint": 5})
    device = hub_connect(hub_credentials(platform, reg))
    bystander = hub_connect(hub_credentials(platform, other))
    for client in (device, bystander):
        assert client.connect() == 0
        assert client.subscribe("$iothub/twin/res/#") == [1]
        assert client.subscribe("$iothub/twin/PATCH/properties/desired/#") == [1]
    assert device.subscribe("$iothub/#") == [128]  # nothing wider than its own answers

    device.publish("$iothub/twin/GET/?$rid=r1", b"", qos=1)
    topic, body = next_message(device)
    assert topic == "$iothub/twin/res/200/?$rid=r1"
    assert json.loads(body) == {
        "desired": {"setpoint": 5, "$version": 1},
        "reported": {"$version": 0},
    }

    device.publish("$iothub/twin/PATCH/properties/reported/?$rid=r2", b'{"temp": 21}', qos=1)
    assert next_message(device) == ("$iothub/twin/res/204/?$rid=r2&$version=1", b"")
    assert platform.admin.get_twin(reg.device_id).reported.properties == {"temp": 21}

    device.publish("$iothub/twin/PATCH/properties/reported/?$rid=r3", b"{not json", qos=1)
    topic, body = next_message(device)
    assert topic == "$iothub/twin/res/400/?$rid=r3"
    assert "message" in json.loads(body)

    platform.admin.update_desired_properties(reg.device_id, {"setpoint": 6})
    topic, body = next_message(device)
    assert topic == "$iothub/twin/PATCH/properties/desired/?$version=2"
    assert json.loads(body) == {"setpoint": 6, "$version": 2}
    assert bystander.messages.empty()
    assert platform.admin.get_twin(other.device_id).reported.version == 0
