"""The embedded broker's ingest fast path (broker/handler.py, broker/ingest.py), driven with
hand-built MQTT packets so the test decides how they share TCP segments: many packets in
one read, a packet split across two, PUBACK order, the ACL on every PUBLISH, duplicates in
one commit, and a commit that fails."""

from __future__ import annotations

import socket
import sqlite3
import struct
import time
import zlib
from collections.abc import Iterator

import pytest

from iiotsim.platform import Platform
from tests.security.raw_mqtt import (
    DISCONNECT,
    closed_by_peer,
    connect_packet,
    open_socket,
    read_connack,
    varint,
)

from .mqtt import WAIT, provision, wait_for
from .test_broker import stored


def publish(topic: str, payload: bytes, *, qos: int = 1, packet_id: int = 1) -> bytes:
    topic_bytes = topic.encode()
    variable = struct.pack("!H", len(topic_bytes)) + topic_bytes
    if qos:
        variable += struct.pack("!H", packet_id)
    return bytes([0x30 | (qos << 1)]) + varint(len(variable) + len(payload)) + variable + payload


def read_pubacks(sock: socket.socket, count: int) -> list[int]:
    """Packet ids of the next ``count`` PUBACKs, in the order they came (bounded wait)."""
    data = b""
    deadline = time.monotonic() + WAIT
    while len(data) < 4 * count:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    ids = []
    for i in range(0, len(data) - len(data) % 4, 4):
        assert data[i : i + 2] == b"\x40\x02", data[i : i + 4]
        ids.append(struct.unpack("!H", data[i + 2 : i + 4])[0])
    return ids


@pytest.fixture
def device(platform: Platform) -> Iterator[tuple[socket.socket, str]]:
    reg = provision(platform, "fast-0001")
    sock = open_socket(platform.mqtt_host, platform.mqtt_port)
    sock.sendall(connect_packet(reg.device_id, reg.device_id, reg.password))
    assert read_connack(sock) == 0
    yield sock, reg.device_id
    sock.close()


def test_many_packets_in_one_segment_and_one_split_across_two(
    platform: Platform, device: tuple[socket.socket, str]
) -> None:
    """Thirty PUBLISHes in one write, the last one's second half sent later: every one is
    stored and acknowledged, PUBACKs in the order of the PUBLISHes [MQTT-4.6.0-2]."""
    sock, device_id = device
    packets = [
        publish(f"devices/{device_id}/messages/s/mid=m{i:02d}", f"p{i}".encode(), packet_id=i + 1)
        for i in range(30)
    ]
    whole = b"".join(packets)
    cut = len(whole) - len(packets[-1]) // 2
    sock.sendall(whole[:cut])
    assert read_pubacks(sock, 29) == list(range(1, 30))
    assert len(stored(platform, device_id)) == 29
    sock.sendall(whole[cut:])
    assert read_pubacks(sock, 1) == [30]
    assert [m for _, m, _ in stored(platform, device_id)] == [f"m{i:02d}" for i in range(30)]


def test_acl_on_every_publish_of_one_segment(
    platform: Platform, device: tuple[socket.socket, str]
) -> None:
    """Another device's topic between two of the device's own, in one write: the foreign
    PUBLISH is not stored (for either device), the ones around it are."""
    sock, device_id = device
    provision(platform, "fast-0002")
    sock.sendall(
        publish(f"devices/{device_id}/messages/s/mid=own1", b"1", packet_id=1)
        + publish("devices/fast-0002/messages/s/mid=forged", b"x", packet_id=2)
        + publish(f"devices/{device_id}/messages/s/mid=own2", b"2", packet_id=3)
        + publish(f"devices/{device_id}/twin/desired", b"{}", packet_id=4)  # not its to send
        + publish(f"devices/{device_id}/messages/s/mid=own3", b"3", qos=0)
    )
    assert wait_for(lambda: len(stored(platform, device_id)) == 3)
    assert [m for _, m, _ in stored(platform, device_id)] == ["own1", "own2", "own3"]
    assert stored(platform, "fast-0002") == []
    sock.sendall(DISCONNECT)


def test_refused_messages_are_acknowledged_in_their_turn(
    platform: Platform, device: tuple[socket.socket, str]
) -> None:
    """A message refused for good (over the size limit, undecodable zlib) is acknowledged,
    never stored, and its PUBACK keeps its place among the stored messages' ones (it goes
    through the ingest queue with them rather than out at once)."""
    sock, device_id = device
    too_big = b"x" * (platform.settings.max_mqtt_message_size + 1)
    sock.sendall(
        publish(f"devices/{device_id}/messages/s/mid=a", b"a", packet_id=1)
        + publish(f"devices/{device_id}/messages/s/mid=z&ce=zlib", b"not zlib", packet_id=2)
        + publish(
            f"devices/{device_id}/messages/s/mid=zz&ce=zlib", zlib.compress(b"zz"), packet_id=3
        )
        + publish(f"devices/{device_id}/messages/s/mid=big", too_big, packet_id=4)
    )
    assert read_pubacks(sock, 4) == [1, 2, 3, 4]
    assert stored(platform, device_id) == [("s", "a", "a"), ("s", "zz", "zz")]
    assert platform.services.broker.dropped_messages == 2


def test_a_duplicate_in_the_same_commit_is_stored_once(
    platform: Platform, device: tuple[socket.socket, str]
) -> None:
    """The same message id twice in one write (so in one commit), and again later: one row,
    every copy acknowledged."""
    sock, device_id = device
    sock.sendall(
        publish(f"devices/{device_id}/messages/s/mid=d1", b"first", packet_id=1)
        + publish(f"devices/{device_id}/messages/s/mid=d1", b"again", packet_id=2)
        + publish(f"devices/{device_id}/messages/s/mid=d2", b"other", packet_id=3)
    )
    assert read_pubacks(sock, 3) == [1, 2, 3]
    sock.sendall(publish(f"devices/{device_id}/messages/s/mid=d1", b"late", packet_id=4))
    assert read_pubacks(sock, 1) == [4]
    assert stored(platform, device_id) == [("s", "d1", "first"), ("s", "d2", "other")]


def test_a_failed_commit_is_not_acknowledged_and_the_resend_is_stored(platform: Platform) -> None:
    """The database refuses the transaction holding the message (a SQLite trigger raising
    on its stream): no PUBACK, the connection is closed; the device's resend after
    reconnecting is stored once the database takes it again."""
    reg = provision(platform, "fast-0003")
    db = sqlite3.connect(platform.data_dir / "iiot.db", isolation_level=None)
    db.execute(
        "CREATE TRIGGER refuse_doomed BEFORE INSERT ON messages WHEN NEW.stream = 'doomed' "
        "BEGIN SELECT RAISE(ABORT, 'refused for the test'); END"
    )
    topic = f"devices/{reg.device_id}/messages/doomed/mid=r1"
    sock = open_socket(platform.mqtt_host, platform.mqtt_port)
    try:
        sock.sendall(connect_packet(reg.device_id, reg.device_id, reg.password))
        assert read_connack(sock) == 0
        sock.sendall(publish(topic, b"r", packet_id=7))
        assert closed_by_peer(sock, WAIT), "the connection stayed open"
    finally:
        sock.close()
    assert stored(platform, reg.device_id) == []
    db.execute("DROP TRIGGER refuse_doomed")
    db.close()
    sock = open_socket(platform.mqtt_host, platform.mqtt_port)
    try:
        sock.sendall(connect_packet(reg.device_id, reg.device_id, reg.password))
        assert read_connack(sock) == 0
        resend = bytearray(publish(topic, b"r", packet_id=7))
        resend[0] |= 0x08  # DUP
        sock.sendall(bytes(resend))
        assert read_pubacks(sock, 1) == [7]
    finally:
        sock.close()
    assert stored(platform, reg.device_id) == [("doomed", "r1", "r")]
