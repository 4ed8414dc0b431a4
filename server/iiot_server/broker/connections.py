"""Connection hygiene for the embedded broker: packet size limits read off MQTT framing,
closing a socket on every exit, and the connection limit (issue 10, items 2 and 8).

amqtt 0.12.1 reads whatever length a packet announces (a 64 MB PUBLISH was buffered whole
before the platform dropped it), and leaves a connection that ended before a valid CONNECT
open (236 sockets in CLOSE-WAIT after 360 bare connect/close cycles).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from amqtt.adapters import ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter, WriterAdapter

from ..domain.errors import PacketTooLarge
from ..settings import Settings

log = logging.getLogger(__name__)

HEADER_ALLOWANCE = 4 * 1024
"""Bytes allowed above ``max_mqtt_message_size`` for a PUBLISH's fixed header, topic and
packet id (a device topic with every message property is under 500 bytes)."""

CLOSE_TIMEOUT = 2.0
"""Seconds a graceful close may wait to flush to a peer that does not read; then abort."""


def max_packet_size(settings: Settings) -> int:
    """The largest MQTT packet the broker reads, headers included."""
    if settings.mqtt_max_packet_size is not None:
        return settings.mqtt_max_packet_size
    return settings.max_mqtt_message_size + HEADER_ALLOWANCE


def connection_limit(settings: Settings) -> int:
    """How many MQTT connections may be open at once (see ``Settings.mqtt_max_connections``).

    >>> connection_limit(Settings(mqtt_max_connections=5))
    5
    """
    if settings.mqtt_max_connections is not None:
        return settings.mqtt_max_connections
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX: no descriptor limit to read
        return 10_000
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(16, soft * 3 // 4)


class PacketSizeLimit(ReaderAdapter):
    """A reader that follows MQTT framing (type byte, variable-length remaining length,
    body) and raises :class:`PacketTooLarge` as soon as a decoded remaining length exceeds
    the limit, so the body is never read. The first packet (the CONNECT, sent before
    authentication) has its own, smaller limit.

    As a backstop, should amqtt ever read a packet only in part and lose the framing, no
    single read may ask for more than the limit either.
    """

    def __init__(self, reader: ReaderAdapter, *, first_packet_limit: int, limit: int) -> None:
        self._reader = reader
        self._limit = first_packet_limit
        self._next_limit = limit
        self._body_left = 0
        self._in_length = False
        self._length = 0
        self._multiplier = 1

    async def read(self, n: int = -1) -> bytes:
        if n < 0 or n > max(self._limit, self._next_limit):
            raise PacketTooLarge(f"a read of {n} bytes (limit {self._limit})")
        data: bytes = await self._reader.read(n)
        self._follow(data)
        return data

    async def read_some(self, n: int) -> bytes:
        """Up to ``n`` bytes, whatever has arrived (waiting only if nothing has), framing
        followed as by :meth:`read`; empty at EOF. The broker's reader loop takes every
        whole packet of a chunk at once instead of awaiting each field of each packet."""
        if not isinstance(self._reader, ChunkReader):
            raise TypeError("read_some needs a ChunkReader underneath")
        data = await self._reader.read_some(n)
        self._follow(data)
        return data

    @property
    def reads_chunks(self) -> bool:
        """Whether :meth:`read_some` can be used."""
        return isinstance(self._reader, ChunkReader)

    def _follow(self, data: bytes) -> None:
        i, size = 0, len(data)
        while i < size:
            if self._body_left:
                taken = min(self._body_left, size - i)
                self._body_left -= taken
                i += taken
            elif not self._in_length:  # the packet's type byte
                self._in_length, self._length, self._multiplier = True, 0, 1
                i += 1
            else:  # a byte of the remaining length
                byte = data[i]
                i += 1
                self._length += (byte & 0x7F) * self._multiplier
                self._multiplier *= 128
                if self._length > self._limit:
                    raise PacketTooLarge(
                        f"a packet of at least {self._length} bytes (limit {self._limit})"
                    )
                if not byte & 0x80:
                    self._in_length = False
                    self._body_left = self._length
                    self._limit = self._next_limit  # the CONNECT's limit applied once

    def feed_eof(self) -> None:
        self._reader.feed_eof()


class ChunkReader(StreamReaderAdapter):
    """amqtt's TCP reader adapter that can also return whatever has arrived."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__(reader)
        self._stream = reader

    async def read_some(self, n: int) -> bytes:
        return await self._stream.read(n)


class AbortableStreamWriter(StreamWriterAdapter):
    """amqtt's TCP writer adapter that can also drop the connection at once (its graceful
    close waits to flush, forever if the peer does not read)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__(writer)
        self._transport = writer.transport

    def abort(self) -> None:
        self.is_closed = True
        self._transport.abort()


async def close_connection(writer: WriterAdapter) -> None:
    """Close ``writer``'s connection whatever state it is in (idempotent)."""
    try:
        await asyncio.wait_for(writer.close(), CLOSE_TIMEOUT)
    except (TimeoutError, OSError, RuntimeError) as exc:
        log.debug("closing an MQTT connection failed (%r): aborting it", exc)
        if isinstance(writer, AbortableStreamWriter):
            with suppress(OSError, RuntimeError):
                writer.abort()
