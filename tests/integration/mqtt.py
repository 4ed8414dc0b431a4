"""A real paho-mqtt 2.x client, driven synchronously for tests (network waits are bounded
real-time waits on events; no test waits for *clock* time to pass)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import paho.mqtt.client as mqtt

from iiotsim.platform import Platform

WAIT = 10.0  # seconds: generous bound for network events on a loaded machine


def wait_for(condition: Callable[[], bool], timeout: float = 2 * WAIT) -> bool:
    """Poll a condition on real network effects (bounded; not a wait for clock time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@dataclass
class Registered:
    device_id: str
    pt: str
    rt: str
    password: str


def provision(platform: Platform, device_id: str, **token_options: Any) -> Registered:
    """init → approve → complete → register over real HTTP."""
    pt = platform.admin.create_provisioning_token("test", **token_options).provisioning_token
    auth = {"Authorization": f"DeviceToken {pt}"}
    with httpx.Client(base_url=platform.http_url, timeout=30) as http:
        op = http.post(
            "/provisioning-operations/init", json={"deviceId": device_id}, headers=auth
        ).json()
        platform.admin.approve_operation(op["provisioningOperationId"])
        rt = http.put(
            "/provisioning-operations/complete",
            json={"provisioningOperationId": op["provisioningOperationId"]},
            headers=auth,
        ).json()["registrationToken"]
        reg = http.put("/devices/register", headers={"Authorization": f"DeviceToken {rt}"}).json()
    return Registered(device_id, pt, rt, reg["mqttPassword"])


class Device:
    """One MQTT connection."""

    def __init__(
        self, platform: Platform, client_id: str, password: str | None, username: str | None = ""
    ) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        if password is not None or username:
            self.client.username_pw_set(client_id if username == "" else username, password)
        self.host, self.port = platform.mqtt_host, platform.mqtt_port
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack: int | None = None
        self._answered = threading.Event()  # CONNACK received or connection closed
        self.suback: list[int] = []
        self._subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connack = rc.value
        (self.connected if not rc.is_failure else self.disconnected).set()
        self._answered.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        self.disconnected.set()
        self._answered.set()

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, codes: list[Any], _p: Any) -> None:
        self.suback = [c.value for c in codes]
        self._subscribed.set()

    def connect(self) -> int:
        """Connect; returns the CONNACK code (0 = accepted)."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._answered.wait(WAIT):
            raise TimeoutError("no CONNACK")
        return -1 if self.connack is None else self.connack  # -1: closed without a CONNACK

    def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        self._subscribed.clear()
        self.client.subscribe(topic, qos)
        assert self._subscribed.wait(WAIT), "no SUBACK"
        return self.suback

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(WAIT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish_probe(
    platform: Platform, device_id: str, password: str, stream: str = "probe", payload: bytes = b"p"
) -> None:
    """Connect as the device, publish one QoS 1 message on ``stream`` and disconnect: the
    broker is up and takes this device's messages."""
    probe = Device(platform, device_id, password)
    try:
        assert probe.connect() == 0
        probe.publish(f"devices/{device_id}/messages/{stream}", payload, qos=1)
    finally:
        probe.close()
