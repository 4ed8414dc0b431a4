"""The broker refuses an oversized MQTT packet before buffering it (issue 10, item 8).

amqtt 0.12.1 read a PUBLISH's whole announced body into memory (64 MB from one
authenticated device) before the platform dropped it as over ``max_mqtt_message_size``.
"""

from __future__ import annotations

from iiotsim.platform import Platform
from tests.integration.mqtt import WAIT, Device, provision, publish_probe

from .raw_mqtt import closed_by_peer, connect_packet, open_socket, publish_header, read_connack

ANNOUNCED = 64 * 1024 * 1024


def test_publish_announcing_64_mb_is_cut_after_its_header(platform: Platform) -> None:
    """The connection is closed with not one byte of the body sent: the broker decided on
    the announced length alone (streaming the body instead would measure the kernel's
    socket buffers, megabytes on loopback, not the broker)."""
    reg = provision(platform, "size-0001")
    sock = open_socket(platform.mqtt_host, platform.mqtt_port)
    try:
        sock.sendall(connect_packet(reg.device_id, reg.device_id, reg.password))
        assert read_connack(sock) == 0
        sock.sendall(publish_header(f"devices/{reg.device_id}/messages/big", ANNOUNCED))
        assert closed_by_peer(sock, WAIT), "the broker waits for the 64 MB body"
    finally:
        sock.close()
    # the broker is still up, and the same device connects and publishes normally
    publish_probe(platform, reg.device_id, reg.password, "small", b"ok")
    assert [m.payload for m in platform.admin.list_device_messages(reg.device_id)] == ["ok"]


def test_oversized_connect_is_cut_before_authentication(platform: Platform) -> None:
    sock = open_socket(platform.mqtt_host, platform.mqtt_port)
    try:
        sock.sendall(b"\x10" + bytes([0x80, 0x80, 0x80, 0x01]))  # CONNECT announcing 2 MiB
        assert closed_by_peer(sock, WAIT)
    finally:
        sock.close()


def test_a_message_at_the_limit_still_passes(platform: Platform) -> None:
    reg = provision(platform, "size-0002")
    device = Device(platform, reg.device_id, reg.password)
    limit = platform.settings.max_mqtt_message_size
    try:
        assert device.connect() == 0
        device.publish(f"devices/{reg.device_id}/messages/full", b"x" * limit, qos=1)
    finally:
        device.close()
    assert [len(m.payload) for m in platform.admin.list_device_messages(reg.device_id)] == [limit]
