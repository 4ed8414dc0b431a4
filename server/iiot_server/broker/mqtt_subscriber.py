"""The platform's ingest connection to mosquitto: an MQTT 3.1.1 subscriber with a persistent
session, on the platform's own event loop, that acknowledges in batches.

Why not paho here (issue 14): with paho (``manual_ack``) Mosquitto mode stored 0.56-0.79x
of what raw mosquitto forwards (``benchmarks/ingest_mosquitto_mode.py``, 8 publishers at
QoS 1) at 71-94 µs of platform CPU per message. py-spy put about 60 % of it in paho: a
``MQTTMessageInfo`` (a ``threading.Condition``) built for every incoming message, the hand
over from paho's network thread to the loop, and one queued packet, wake-up and ``send()``
per PUBACK. Neither paho nor an asyncio client (amqtt's client starts a task per packet;
gmqtt sends each PUBACK on its own) can send the PUBACKs of one commit in one write. This
class does only what the ingest needs: CONNECT (clean session off), SUBSCRIBE, taking
PUBLISH packets at QoS 0/1 straight from ``data_received`` (split by the embedded broker's
:func:`~iiot_server.broker.handler.next_frame`), PINGREQ, and PUBACKs queued per packet id
and written together (:meth:`flush_pubacks`). It reconnects by itself; mosquitto then resends
what was not acknowledged. The platform publishes (twin answers, desired patches) on its
other, paho, connection.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Sequence
from typing import cast

from ..domain.errors import BrokerUnavailable
from .handler import next_frame

log = logging.getLogger(__name__)

_CONNECT, _CONNACK, _PUBLISH, _PUBACK, _SUBSCRIBE, _SUBACK = 1, 2, 3, 4, 8, 9
_PINGREQ_PACKET = b"\xc0\x00"
_DISCONNECT_PACKET = b"\xe0\x00"
_PUBACK_PACKET = struct.Struct(">BBH")
RECONNECT_DELAY = 1.0
"""Seconds (real time) between attempts to reach mosquitto again."""

Handler = Callable[[str, bytes, int, int, int], None]
"""``(topic, payload, qos, packet id, generation)`` of each PUBLISH received."""


def _string(value: str) -> bytes:
    data = value.encode()
    return len(data).to_bytes(2, "big") + data


def _packet(first: int, body: bytes) -> bytes:
    """A packet: its first byte, the remaining length (variable-length integer), the body."""
    length, header = len(body), bytearray([first])
    while True:
        byte, length = length & 0x7F, length >> 7
        header.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(header) + body


def connect_packet(client_id: str, username: str, password: str, keepalive: int) -> bytes:
    """CONNECT for MQTT 3.1.1 with a user name and password, clean session off.

    >>> connect_packet("c", "u", "p", 30).hex()  # 4 = 3.1.1; c0: user name, password
    '101300044d51545404c0001e000163000175000170'
    """
    flags = 0x80 | 0x40  # user name, password; clean session bit (0x02) off
    body = (
        _string("MQTT")
        + bytes([4, flags])
        + keepalive.to_bytes(2, "big")
        + _string(client_id)
        + _string(username)
        + _string(password)
    )
    return _packet(_CONNECT << 4, body)


def subscribe_packet(packet_id: int, topics: Sequence[str], qos: int) -> bytes:
    """SUBSCRIBE (its first byte's flags are 0010, as MQTT 3.1.1 requires).

    >>> subscribe_packet(1, ["a/#"], 1).hex()
    '820800010003612f2301'
    """
    body = packet_id.to_bytes(2, "big") + b"".join(_string(t) + bytes([qos]) for t in topics)
    return _packet(_SUBSCRIBE << 4 | 0x02, body)


class _Connection(asyncio.Protocol):
    """One TCP connection of the subscriber."""

    def __init__(self, owner: PersistentSubscriber, generation: int) -> None:
        self.owner = owner
        self.generation = generation
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.connack: asyncio.Future[int] = owner.loop.create_future()
        self.suback: asyncio.Future[bytes] = owner.loop.create_future()
        self.closed: asyncio.Future[None] = owner.loop.create_future()
        self.reads = 0
        """Chunks received: unchanged for a whole ping interval, mosquitto is not answering."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        buffer = self.buffer
        buffer += data
        offset = 0
        handle = self.owner.handler
        try:
            while (frame := next_frame(buffer, offset)) is not None:
                first, start, end = frame
                offset = end
                kind = first >> 4
                if kind == _PUBLISH:
                    qos = (first >> 1) & 0x03
                    topic_end = start + 2 + (buffer[start] << 8 | buffer[start + 1])
                    topic = buffer[start + 2 : topic_end].decode()
                    if qos:
                        packet_id = buffer[topic_end] << 8 | buffer[topic_end + 1]
                        payload = bytes(buffer[topic_end + 2 : end])
                    else:
                        packet_id, payload = 0, bytes(buffer[topic_end:end])
                    handle(topic, payload, qos, packet_id, self.generation)
                elif kind == _CONNACK and not self.connack.done():
                    self.connack.set_result(buffer[start + 1] if end - start >= 2 else 255)
                elif kind == _SUBACK and not self.suback.done():
                    self.suback.set_result(bytes(buffer[start + 2 : end]))
        except Exception:  # a malformed packet from mosquitto: start again
            log.exception("mosquitto sent a packet the ingest cannot read: reconnecting")
            if self.transport is not None:
                self.transport.close()
        del buffer[:offset]

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.connack, self.suback):
            if not future.done():
                future.set_exception(BrokerUnavailable("mosquitto closed the connection"))
        if not self.closed.done():
            self.closed.set_result(None)


class PersistentSubscriber:
    """The ingest's connection to mosquitto, kept up until :meth:`stop`."""

    def __init__(
        self,
        client_id: str,
        credentials: tuple[str, str],
        subscriptions: Sequence[str],
        handler: Handler,
        *,
        keepalive: int = 30,
        timeout: float = 10.0,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.client_id = client_id
        self.credentials = credentials
        self.subscriptions = tuple(subscriptions)
        self.handler = handler
        self.keepalive = keepalive
        self.timeout = timeout
        self.generation = 0
        """Counts connections: a PUBACK goes only to the connection that received the
        message (mosquitto may reuse its packet id on the next one)."""
        self.on_connected: list[Callable[[], None]] = []
        self._connection: _Connection | None = None
        self._pubacks: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> None:
        """Connect and subscribe; BrokerUnavailable if mosquitto does not answer in time.
        Afterwards a lost connection is made again in the background."""
        await self._connect(host, port)
        self._task = asyncio.create_task(self._keep(host, port), name="iiot-ingest-link")

    async def _connect(self, host: str, port: int) -> None:
        self.generation += 1
        generation = self.generation
        _, connection = await asyncio.wait_for(
            self.loop.create_connection(lambda: _Connection(self, generation), host, port),
            self.timeout,
        )
        assert connection.transport is not None
        self._pubacks = []
        # current from the start: mosquitto sends the session's queued messages right
        # after CONNACK, before SUBACK, and their PUBACKs must reach this connection
        self._connection = connection
        transport = connection.transport
        username, password = self.credentials
        transport.write(connect_packet(self.client_id, username, password, self.keepalive))
        try:
            code = await asyncio.wait_for(connection.connack, self.timeout)
            if code != 0:
                raise BrokerUnavailable(f"mosquitto refused the ingest connection (code {code})")
            transport.write(subscribe_packet(1, self.subscriptions, 1))
            granted = await asyncio.wait_for(connection.suback, self.timeout)
            if any(q > 1 for q in granted):
                raise BrokerUnavailable(f"mosquitto refused the ingest subscriptions: {granted!r}")
        except BaseException:
            self._connection = None
            transport.close()
            raise
        for callback in self.on_connected:
            callback()

    async def _keep(self, host: str, port: int) -> None:
        while True:
            connection = self._connection
            if connection is not None:
                # A PINGREQ every half keep-alive; nothing at all received in the half
                # after one (no PINGRESP, no message) and the link is taken for dead, as
                # paho does: a mosquitto stopped (SIGSTOP, a hung host) or a half-open
                # connection would otherwise hold the ingest silent for ever.
                reads_at_ping: int | None = None
                while not connection.closed.done():
                    await asyncio.wait({connection.closed}, timeout=self.keepalive / 2)
                    transport = connection.transport
                    if connection.closed.done() or transport is None:
                        break
                    if reads_at_ping is not None and connection.reads == reads_at_ping:
                        log.warning(
                            "mosquitto did not answer the ingest's PINGREQ in %.0f s",
                            self.keepalive / 2,
                        )
                        transport.abort()  # close() would wait to flush to a silent peer
                        await asyncio.wait({connection.closed}, timeout=self.timeout)
                        break
                    reads_at_ping = connection.reads
                    transport.write(_PINGREQ_PACKET)
                self._connection = None
                log.warning("the ingest connection to mosquitto was lost: reconnecting")
            try:
                await self._connect(host, port)
            except (OSError, TimeoutError, BrokerUnavailable) as exc:
                log.warning("ingest connection to mosquitto failed (%s): retrying", exc)
                await asyncio.sleep(RECONNECT_DELAY)

    # acknowledging -------------------------------------------------------------------

    def queue_puback(self, packet_id: int, generation: int) -> None:
        """Acknowledge ``packet_id`` at the next :meth:`flush_pubacks`, if the connection
        that received it is still the current one."""
        if generation == self.generation:
            self._pubacks.append(packet_id)

    def flush_pubacks(self) -> None:
        """Every queued PUBACK in one write."""
        ids, self._pubacks = self._pubacks, []
        connection = self._connection
        if ids and connection is not None and connection.transport is not None:
            pack = _PUBACK_PACKET.pack
            connection.transport.write(b"".join([pack(0x40, 2, i) for i in ids]))

    async def stop(self) -> None:
        """Disconnect without acknowledging anything more (mosquitto keeps the rest queued
        for the session)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._pubacks = []
        connection, self._connection = self._connection, None
        if connection is not None and connection.transport is not None:
            connection.transport.write(_DISCONNECT_PACKET)
            connection.transport.close()


__all__ = ["PersistentSubscriber", "connect_packet", "subscribe_packet"]
