"""The SDK's one network thread (``iiot_device.network``) against a bare TCP peer that
answers CONNECT and counts what arrives: a PUBLISH is written at once, without registering
the socket for writability, and what does not fit a full socket buffer is written as the
peer drains it, in order."""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from iiot_device.network import NetworkLoop
from paho.mqtt.enums import CallbackAPIVersion

from ..integration.mqtt import wait_for

CONNACK = b"\x20\x02\x00\x00"


class Peer:
    """Accepts one connection, answers its CONNECT, then reads (once ``reading`` is set)
    and keeps every byte after the CONNECT."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.reading = threading.Event()
        self.received = bytearray()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            conn.recv(1)  # CONNECT's fixed header, then its remaining length and body
            length, shift = 0, 0
            while True:
                byte = conn.recv(1)[0]
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            while length:
                length -= len(conn.recv(length))
            conn.sendall(CONNACK)
            self.reading.wait(30)
            while chunk := conn.recv(65536):
                self.received += chunk

    def close(self) -> None:
        self.server.close()


class CountingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    def __init__(self) -> None:
        super().__init__()
        self.modified = 0

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        self.modified += 1
        return super().modify(fileobj, events, data)


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


def connected_client(loop: NetworkLoop, peer: Peer) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="net-1", protocol=mqtt.MQTTv311)
    up = threading.Event()
    client.on_connect = lambda *_: up.set()
    loop.attach(client)
    client.connect("127.0.0.1", peer.port, keepalive=60)
    assert up.wait(10), "no CONNACK"
    return client


def publish_packet(payload: bytes) -> bytes:
    body = b"\x00\x01t" + payload  # topic "t", QoS 0: no packet id
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return b"\x30" + bytes(encoded) + body


def test_a_publish_is_written_at_once_without_waiting_for_writability(peer: Peer) -> None:
    loop = NetworkLoop()
    selector = CountingSelector()
    loop._selector.close()
    loop._selector = selector
    selector.register(loop._wake_r, selectors.EVENT_READ, None)
    peer.reading.set()
    client = connected_client(loop, peer)
    modified = selector.modified
    expected = b"".join(publish_packet(b"m%03d" % i) for i in range(100))
    for i in range(100):
        client.publish("t", b"m%03d" % i, qos=0)
    assert wait_for(lambda: len(peer.received) >= len(expected))
    assert bytes(peer.received[: len(expected)]) == expected
    # registering for writability and off again was two epoll_ctl calls per PUBLISH
    assert selector.modified - modified == 0
    loop.disconnect(client)


def test_what_a_full_socket_buffer_does_not_take_is_written_as_the_peer_reads(
    peer: Peer,
) -> None:
    loop = NetworkLoop()
    client = connected_client(loop, peer)  # the peer reads nothing after CONNECT yet
    payloads = [bytes([i]) * 65536 for i in range(64)]  # 4 MiB: past any loopback buffer
    for payload in payloads:
        client.publish("t", payload, qos=0)
    assert wait_for(lambda: client.want_write())  # paho holds what the socket refused
    peer.reading.set()
    expected = b"".join(publish_packet(p) for p in payloads)
    assert wait_for(lambda: len(peer.received) >= len(expected))
    assert bytes(peer.received[: len(expected)]) == expected
    assert not client.want_write()
    loop.disconnect(client)
