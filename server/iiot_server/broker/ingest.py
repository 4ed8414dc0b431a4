"""The embedded broker's telemetry ingest: messages queued at receipt in arrival order,
stored in group commits (one transaction for whatever arrived meanwhile, up to
:data:`INGEST_BATCH`), and acknowledged once committed: a connection's PUBACKs for one
commit leave in one write.

Why one write per connection and commit: on loopback each ``send()`` runs the receiver's
TCP path in the sender's time, and one PUBACK per message was a third of the platform's
CPU under load (py-spy, ``benchmarks/ingest.py``, 8 publishers at QoS 1: 33 % of samples in
``StreamWriter.write``); with 8 connections and a few hundred messages per commit, that is
8 sends instead of hundreds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from ..clock import Clock
from ..domain.errors import ValidationError
from ..domain.topics import DeviceTopic
from ..services.messages import IncomingMessage, MessageService, decompress
from ..settings import Settings

log = logging.getLogger(__name__)

INGEST_BATCH = 512
"""Most messages stored in one transaction."""


class PubackSink(Protocol):
    """A connection waiting for the PUBACKs of the QoS 1 messages it sent."""

    def queue_puback(self, packet_id: int) -> None:
        """The message ``packet_id`` is stored: acknowledge it at the next flush."""

    def flush_pubacks(self) -> None:
        """Send the queued PUBACKs, in the order they were queued."""

    def ingest_failed(self, exc: Exception) -> None:
        """Messages of this connection were not stored: they are never acknowledged."""


@dataclass(slots=True)
class PendingMessage:
    """A message waiting for its commit, and who waits for it."""

    message: IncomingMessage | None
    """None for a message refused for good (too large, undecodable): nothing to store, but
    its PUBACK keeps its place among the connection's others."""
    stored: asyncio.Future[None] | None = None
    sink: PubackSink | None = None
    packet_id: int = 0


class TelemetryIngest:
    """Queue of device telemetry for storage, and the task storing it."""

    def __init__(self, messages: MessageService, settings: Settings, clock: Clock) -> None:
        self._messages = messages
        self._settings = settings
        self._clock = clock
        self._pending: deque[PendingMessage] = deque()
        self._arrived = asyncio.Event()
        self._unfinished = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self.dropped_messages = 0
        """Messages taken without a waiter (QoS 0, Wills) that were not stored."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="iiot-ingest")

    async def stop(self) -> None:
        """Store every message accepted so far, then stop."""
        await self.join()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def join(self) -> None:
        """Wait until every message accepted so far was stored (or failed)."""
        while self._unfinished:
            await self._drained.wait()

    def offer(
        self,
        device_id: str,
        topic: DeviceTopic,
        data: bytes,
        *,
        stored: asyncio.Future[None] | None = None,
        sink: PubackSink | None = None,
        packet_id: int = 0,
    ) -> bool:
        """Queue a device's telemetry on its own ``topic`` (the caller checked the ACL).
        False if refused for good: larger than ``max_mqtt_message_size`` or not decodable
        (logged, counted as dropped); a ``sink`` is then still acknowledged in its turn, a
        ``stored`` future is left to the caller."""
        if len(data) > self._settings.max_mqtt_message_size:
            log.warning(
                "%s sent %d bytes over MQTT (limit %d): dropped; upload over HTTP",
                device_id,
                len(data),
                self._settings.max_mqtt_message_size,
            )
            return self._refuse(sink, packet_id)
        try:
            payload = decompress(data, topic.compression)
        except ValidationError as exc:
            log.warning("%s sent an undecodable payload on %s: %s", device_id, topic.stream, exc)
            return self._refuse(sink, packet_id)
        assert topic.stream is not None  # telemetry topics name their stream
        message = IncomingMessage(
            device_id, topic.stream, payload, topic.message_id, self._clock.now()
        )
        self._put(PendingMessage(message, stored, sink, packet_id))
        return True

    def accept(self, message: IncomingMessage, stored: asyncio.Future[None] | None = None) -> None:
        """Queue a message for storage; ``stored`` completes once it is committed."""
        self._put(PendingMessage(message, stored))

    def _refuse(self, sink: PubackSink | None, packet_id: int) -> bool:
        self.dropped_messages += 1
        if sink is not None:
            self._put(PendingMessage(None, None, sink, packet_id))
        return False

    def _put(self, pending: PendingMessage) -> None:
        self._pending.append(pending)
        self._unfinished += 1
        self._drained.clear()
        self._arrived.set()

    async def _run(self) -> None:
        pending = self._pending
        while True:
            if not pending:
                self._arrived.clear()
                await self._arrived.wait()
            batch = [pending.popleft() for _ in range(min(len(pending), INGEST_BATCH))]
            try:
                await self._store(batch)
            finally:
                self._unfinished -= len(batch)
                if not self._unfinished:
                    self._drained.set()

    async def _store(self, batch: list[PendingMessage]) -> None:
        failure: Exception | None = None
        messages = [p.message for p in batch if p.message is not None]
        if messages:
            try:
                await self._messages.store_many(messages)
            except Exception as exc:  # logged; QoS 1 senders are not acknowledged
                log.exception("storing %d messages failed", len(messages))
                failure = exc
                self.dropped_messages += sum(
                    1
                    for p in batch
                    if p.message is not None and p.stored is None and p.sink is None
                )
        sinks: dict[PubackSink, None] = {}  # in order of first appearance
        for p in batch:
            if p.stored is not None and not p.stored.done():
                if failure is None:
                    p.stored.set_result(None)
                else:
                    p.stored.set_exception(failure)
            if p.sink is not None:
                sinks[p.sink] = None
                if failure is None:
                    p.sink.queue_puback(p.packet_id)
        for sink in sinks:
            try:
                if failure is None:
                    sink.flush_pubacks()
                else:
                    sink.ingest_failed(failure)
            except Exception:  # one connection's trouble is not the others'
                log.exception("acknowledging stored messages failed")


__all__ = ["INGEST_BATCH", "PendingMessage", "PubackSink", "TelemetryIngest"]
