"""MQTT 3.1.1 packets built by hand, for the attacks a well-behaved client library refuses
to make (a Will on someone else's topic, a PUBLISH announcing 64 MB, a CONNECT that never
comes) and for watching a socket be closed."""

from __future__ import annotations

import select
import socket
import struct
import time


def varint(value: int) -> bytes:
    """MQTT's remaining-length encoding (up to 268,435,455)."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _str(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def connect_packet(
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    *,
    will_topic: str | None = None,
    will_message: bytes = b"",
    will_qos: int = 0,
    will_retain: bool = False,
    clean_session: bool = True,
    keep_alive: int = 60,
) -> bytes:
    flags = 0x02 if clean_session else 0
    payload = _str(client_id)
    if will_topic is not None:
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        payload += _str(will_topic) + _str(will_message)
    if username is not None:
        flags |= 0x80
        payload += _str(username)
    if password is not None:
        flags |= 0x40
        payload += _str(password)
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keep_alive) + payload
    return b"\x10" + varint(len(body)) + body


def publish_header(topic: str, payload_length: int, qos: int = 0) -> bytes:
    """A PUBLISH's fixed and variable header announcing ``payload_length`` bytes of payload."""
    variable = _str(topic) + (b"\x00\x01" if qos else b"")
    return bytes([0x30 | (qos << 1)]) + varint(len(variable) + payload_length) + variable


DISCONNECT = b"\xe0\x00"


def open_socket(host: str, port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout)


def read_connack(sock: socket.socket) -> int | None:
    """The CONNACK return code, or None if the broker closed the connection first."""
    data = b""
    while len(data) < 4:
        chunk = sock.recv(4 - len(data))
        if not chunk:
            return None
        data += chunk
    assert data[0] == 0x20, data
    return data[3]


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the peer closes the connection (EOF or reset) within ``within`` seconds,
    discarding anything it sends first (a bounded wait on a network effect)."""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            return False
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True


def abort(sock: socket.socket) -> None:
    """Drop the TCP connection without an MQTT DISCONNECT (an RST, as a crashing device's
    network stack would)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


TCP_STATES = {"01": "ESTABLISHED", "08": "CLOSE_WAIT"}


def server_sockets(port: int) -> dict[str, int]:
    """Accepted (server-side) TCP sockets on ``port`` by state, from /proc/net/tcp{,6}: the
    broker runs in this process (the embedded platform), so these are its descriptors."""
    counts = {name: 0 for name in TCP_STATES.values()}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as table:
                next(table)
                for line in table:
                    fields = line.split()
                    local_port = int(fields[1].rsplit(":", 1)[1], 16)
                    if local_port == port and fields[3] in TCP_STATES:
                        counts[TCP_STATES[fields[3]]] += 1
        except FileNotFoundError:
            continue
    return counts
