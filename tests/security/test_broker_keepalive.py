"""A connection silent past one and a half times its keep-alive is closed as if the network
had failed (MQTT 3.1.1 §3.1.2.10), and its Will goes out.

amqtt 0.12.1 read with the bare keep-alive as timeout and ignored the timeout: a device
whose network vanished without a FIN (a cut cable, a NAT entry dropped) held its session,
its place under ``mqtt_max_connections`` and its "connected" state forever.

Real seconds, not the platform's clock: keep-alive is the wire's timer (the client's
PINGREQ runs on it too), so these waits are bounded waits on a network effect.
"""

from __future__ import annotations

import socket
import time

from iiotsim.platform import Platform
from tests.integration.mqtt import WAIT, provision, wait_for

from .raw_mqtt import closed_by_peer, connect_packet, open_socket, read_connack

PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"


def connect_silent(platform: Platform, device_id: str, password: str, **options: object) -> socket.socket:  # fmt: skip
    sock = open_socket(platform.mqtt_host, platform.mqtt_port)
    sock.sendall(connect_packet(device_id, device_id, password, **options))  # type: ignore[arg-type]
    assert read_connack(sock) == 0
    return sock


def test_a_silent_device_is_disconnected_after_one_and_a_half_keep_alives_and_its_will_sent(
    platform: Platform,
) -> None:
    reg = provision(platform, "ka-0001")
    sock = connect_silent(
        platform,
        reg.device_id,
        reg.password,
        keep_alive=1,
        will_topic=f"devices/{reg.device_id}/messages/status/mid=will-1",
        will_message=b"gone silent",
    )
    try:
        started = time.monotonic()
        assert platform.admin.get_device(reg.device_id).connected
        assert closed_by_peer(sock, WAIT)
        # not before 1.5 x 1 s (a bounded check on the broker's timer, not a speed assert)
        assert time.monotonic() - started >= 1.4
        assert wait_for(lambda: not platform.admin.get_device(reg.device_id).connected)
        assert wait_for(
            lambda: (
                [
                    (m.stream, m.message_id, m.payload)
                    for m in platform.admin.list_device_messages(reg.device_id)
                ]
                == [("status", "will-1", "gone silent")]
            )
        )
    finally:
        sock.close()


def test_a_device_that_pings_within_its_keep_alive_stays_connected(platform: Platform) -> None:
    reg = provision(platform, "ka-0002")
    sock = connect_silent(platform, reg.device_id, reg.password, keep_alive=1)
    try:
        # 3 s of PINGREQ every 0.5 s: twice the 1.5 s the silent device above was given
        for _ in range(6):
            sock.sendall(PINGREQ)
            sock.settimeout(WAIT)
            assert sock.recv(2) == PINGRESP
            assert not closed_by_peer(sock, 0.5)
        assert platform.admin.get_device(reg.device_id).connected
    finally:
        sock.close()


def test_keep_alive_zero_means_no_timeout(platform: Platform) -> None:
    reg = provision(platform, "ka-0003")
    sock = connect_silent(platform, reg.device_id, reg.password, keep_alive=0)
    try:
        assert not closed_by_peer(sock, 2.0)
        assert platform.admin.get_device(reg.device_id).connected
    finally:
        sock.close()
