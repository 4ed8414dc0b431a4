"""Connections that never become an MQTT session are closed (issue 10, item 2).

amqtt 0.12.1 never closed a connection that ended before a valid CONNECT, had no CONNECT
timeout and no connection limit: about 360 bare connect/close cycles under ``ulimit -n 256``
left 236 sockets in CLOSE-WAIT and took ``/health`` down with them.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from iiot_server.settings import Settings

from iiotsim.clock import ManualClock
from iiotsim.platform import Platform
from tests.integration.mqtt import WAIT, Device, provision, wait_for

from .raw_mqtt import closed_by_peer, connect_packet, open_socket, read_connack, server_sockets


def start(tmp_path: Path, clock: ManualClock, **settings: object) -> Platform:
    return Platform(data_dir=tmp_path / "data", clock=clock, settings=Settings(**settings))  # type: ignore[arg-type]


@pytest.fixture
def silent_sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def test_connections_ending_before_connect_are_closed_and_health_still_answers(
    platform: Platform,
) -> None:
    host, port = platform.mqtt_host, platform.mqtt_port
    for i in range(300):
        sock = open_socket(host, port)
        if i % 3 == 1:
            sock.sendall(b"\x00\x01garbage that is not MQTT")
        elif i % 3 == 2:
            sock.sendall(connect_packet(f"nobody-{i:04d}", f"nobody-{i:04d}", "mp_wrong"))
        sock.close()
    assert wait_for(lambda: server_sockets(port) == {"ESTABLISHED": 0, "CLOSE_WAIT": 0}), (
        server_sockets(port)
    )
    assert httpx.get(f"{platform.http_url}/health", timeout=WAIT).status_code == 200
    reg = provision(platform, "conn-0001")
    device = Device(platform, reg.device_id, reg.password)
    try:
        assert device.connect() == 0
    finally:
        device.close()


def test_refused_connect_is_answered_then_closed(platform: Platform) -> None:
    sock = open_socket(platform.mqtt_host, platform.mqtt_port)
    try:
        sock.sendall(connect_packet("conn-0002", "conn-0002", "mp_wrong"))
        assert read_connack(sock) == 5
        assert closed_by_peer(sock, WAIT)
    finally:
        sock.close()


def test_silent_connection_is_closed_after_the_connect_timeout(
    tmp_path: Path, clock: ManualClock, silent_sockets: list[socket.socket]
) -> None:
    with start(tmp_path, clock, mqtt_connect_timeout=0.5) as platform:
        for _ in range(20):
            silent_sockets.append(open_socket(platform.mqtt_host, platform.mqtt_port))
        # a CONNECT started but never finished counts as silent too
        half = open_socket(platform.mqtt_host, platform.mqtt_port)
        half.sendall(connect_packet("conn-0003", "conn-0003", "mp_x")[:5])
        silent_sockets.append(half)
        assert all(closed_by_peer(sock, WAIT) for sock in silent_sockets)
        assert wait_for(
            lambda: server_sockets(platform.mqtt_port) == {"ESTABLISHED": 0, "CLOSE_WAIT": 0}
        )


def test_connection_beyond_the_limit_is_closed_at_once(
    tmp_path: Path, clock: ManualClock, silent_sockets: list[socket.socket]
) -> None:
    # a long CONNECT timeout: the silent ones hold their places for the whole test
    with start(tmp_path, clock, mqtt_max_connections=5, mqtt_connect_timeout=60.0) as platform:
        host, port = platform.mqtt_host, platform.mqtt_port
        for _ in range(5):
            silent_sockets.append(open_socket(host, port))
        assert wait_for(lambda: server_sockets(port)["ESTABLISHED"] == 5)
        extra = open_socket(host, port)
        silent_sockets.append(extra)
        assert closed_by_peer(extra, WAIT)  # long before the 60 s CONNECT timeout
        assert not any(closed_by_peer(sock, 0.05) for sock in silent_sockets[:5])
        for sock in silent_sockets[:5]:
            sock.close()
        # the places are given back: a device connects again
        reg = provision(platform, "conn-0004")
        device = Device(platform, reg.device_id, reg.password)
        try:
            assert wait_for(lambda: server_sockets(port)["ESTABLISHED"] == 0)
            assert device.connect() == 0
        finally:
            device.close()
