"""The broker's per-connection protocol handler: amqtt 0.12.1's, reading whole chunks and
taking a device's telemetry on a fast path that stores it before acknowledging it.

Why its own reader loop (issue 14): amqtt's loop awaits each field of each packet through
two reader adapters, wraps every read in ``asyncio.wait_for`` (a task per packet on
Python 3.11), fires a plugin event per packet, and starts a task per PUBLISH, which fired
the message hook (a task per plugin) whose handler parsed the topic again. Here a read
takes whatever the socket has, every whole packet in it is split off at once
(:func:`next_frame`), and a telemetry PUBLISH of the device's own (QoS 0 or 1) is parsed
once, checked against the ACL (:func:`~iiot_server.domain.topics.device_publication`) and
queued for storage without leaving the loop; its PUBACK is sent once the transaction
holding it committed (:class:`~iiot_server.broker.ingest.TelemetryIngest`). Any other
packet takes amqtt's path as before. The fast path fires no ``mqtt_packet_received``
event: no platform plugin listens to packet events (the broker's ``plugins`` config
replaces amqtt's defaults, its packet logger included). Figures: ``benchmarks/ingest.py``.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from amqtt.adapters import BufferReader
from amqtt.errors import MQTTError, NoDataError
from amqtt.events import BrokerEvents, MQTTEvents
from amqtt.mqtt import packet_class
from amqtt.mqtt.constants import QOS_0, QOS_1
from amqtt.mqtt.packet import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    RESERVED_0,
    RESERVED_15,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    MQTTFixedHeader,
)
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.session import IncomingApplicationMessage, Session

from ..domain.errors import PacketTooLarge
from ..domain.topics import (
    TopicAction,
    TopicKind,
    device_may,
    device_publication,
    hub_telemetry_topic,
    parse_hub_twin_request,
    parse_topic,
)
from .connections import PacketSizeLimit

if TYPE_CHECKING:
    from .server import PlatformBroker

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
"""Most bytes taken from a connection's socket buffer per read."""

_PUBACK = struct.Struct(">BBH")
_PUBACK_TYPE = 0x40  # PUBACK, no flags
_ACKED_WHEN_HANDLED = (TopicKind.TELEMETRY, TopicKind.TWIN_REPORTED)


def next_frame(buffer: bytes | bytearray, offset: int) -> tuple[int, int, int] | None:
    """``(first byte, body start, body end)`` of the MQTT packet starting at ``offset``,
    or None while it has not all arrived.

    >>> next_frame(b"\\x40\\x02\\x00\\x07\\x30", 0)  # a PUBACK, then the start of a PUBLISH
    (64, 2, 4)
    >>> next_frame(b"\\x40\\x02\\x00\\x07\\x30", 4) is None
    True
    >>> next_frame(b"\\x30\\x80\\x01" + bytes(128), 0)  # a two-byte remaining length
    (48, 3, 131)
    """
    size = len(buffer)
    pos = offset + 1
    length = shift = 0
    while True:
        if pos >= size:
            return None
        byte = buffer[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 21:
            raise PacketTooLarge("a remaining length of more than four bytes")
    end = pos + length
    return None if end > size else (buffer[offset], pos, end)


def _acked_when_handled(client_id: str, topic: str) -> bool:
    """Telemetry and reported patches from the device itself: PUBACK once stored."""
    if not device_may(client_id, TopicAction.PUBLISH, topic):
        return False
    parsed = parse_topic(topic)
    return parsed is not None and parsed.kind in _ACKED_WHEN_HANDLED


class _Telemetry(IncomingApplicationMessage):
    """An incoming message whose sender waits for ``iiot_stored``."""

    __slots__ = ("iiot_stored",)

    def __init__(self, packet: PublishPacket, stored: asyncio.Future[None]) -> None:
        header = packet.variable_header
        super().__init__(
            header.packet_id if header is not None else None,
            packet.topic_name,
            packet.qos,
            packet.data,
            packet.retain_flag,
        )
        self.iiot_stored = stored


class IngestingHandler(BrokerProtocolHandler):
    """amqtt's protocol handler, acknowledging a device's telemetry and reported-property
    patches only once they are stored.

    amqtt 0.12.1 sends PUBACK as soon as a PUBLISH is queued for the client's delivery
    loop, which then fires the message hook one message at a time, after scanning every
    subscription for each. A DISCONNECT ends that loop and drops whatever is still queued:
    messages the device was told were delivered are never stored. Telemetry goes to the
    platform only (no device may receive it), so it is queued for storage as it is read
    (:meth:`_take_publish`) and, for QoS 1, acknowledged once the transaction holding it
    committed; a ``twin/reported`` patch is acknowledged once applied
    (:meth:`handle_publish`). Everything else (``twin/get``, QoS 2, topics the device may
    not use) takes amqtt's own path.
    """

    iiot_broker: PlatformBroker
    disconnect_received = False
    """Whether the device sent DISCONNECT (a clean end: its Will is not sent)."""
    _pubacks: list[int]
    _packet_handlers: dict[int, Callable[[Any], Coroutine[Any, Any, None]]]

    # reading: whole chunks, telemetry on the fast path ---------------------------------

    async def _reader_loop(self) -> None:
        """amqtt's reader loop (same exits, same handling of every other packet), reading
        whatever has arrived and taking each whole packet in it."""
        reader = self.reader
        session = self.session
        if (
            not isinstance(reader, PacketSizeLimit)
            or not reader.reads_chunks
            or session is None
            or self._reader_ready is None
        ):
            await super()._reader_loop()
            return
        self._pubacks = []
        self._packet_handlers = self._handlers()
        running_tasks: deque[asyncio.Task[None]] = deque()
        # MQTT 3.1.1 §3.1.2.10: no packet within one and a half times the keep-alive, and
        # the server "MUST disconnect the Network Connection to the Client as if the
        # network had failed" (so its Will goes out). amqtt's broker read with the bare
        # keep-alive as timeout and ignored it (handle_read_timeout does nothing): a
        # device whose network vanished without a FIN held its session, its place in
        # the connection limit and its "connected" state forever. Real (network) time,
        # not the platform's clock: it is the wire's timer, as the client's PINGREQ is.
        keepalive = 1.5 * session.keep_alive if session.keep_alive > 0 else None
        buffer = bytearray()
        first = True
        while True:
            try:
                self._reader_ready.set()
                if first:
                    # amqtt's loop yielded at its first wait_for, letting start() finish (the
                    # broker's handler makes its disconnect waiter there) before any packet
                    # was handled. In the try: a stop() meanwhile must end the loop as below.
                    first = False
                    await asyncio.sleep(0)
                while running_tasks and running_tasks[0].done():
                    running_tasks.popleft()
                try:
                    async with asyncio.timeout(keepalive):
                        chunk = await reader.read_some(READ_SIZE)
                except TimeoutError:
                    log.info(
                        "%s: nothing received in 1.5 x its keep-alive (%.0f s): closing",
                        session.client_id,
                        keepalive,
                    )
                    break
                if not chunk:
                    log.debug("%s: EOF, reader stopping", session.client_id)
                    break
                buffer += chunk
                tasks_before = len(running_tasks)
                del buffer[: await self._take_packets(buffer, running_tasks)]
                if len(running_tasks) > tasks_before:
                    # as amqtt's loop (one wait_for per read): the packets' tasks start before
                    # the next read, which may be the EOF that cancels those still pending
                    await asyncio.sleep(0)
                if self.writer is not None:
                    await self.writer.drain()  # PUBACKs are written for us: keep up with them
            except (asyncio.CancelledError, ConnectionError):
                break
            except Exception as exc:  # as amqtt's loop: log, end the connection
                log.warning("%s: reader loop ended: %r", session.client_id, exc)
                break
        while running_tasks:
            running_tasks.popleft().cancel()
        await self.handle_connection_closed()
        self._reader_stopped.set()
        await self.stop()

    async def _take_packets(
        self, buffer: bytearray, running_tasks: deque[asyncio.Task[None]]
    ) -> int:
        """Handle every whole packet at the start of ``buffer``; returns the bytes taken."""
        offset = 0
        while (frame := next_frame(buffer, offset)) is not None:
            first, start, end = frame
            offset = end
            packet_type = first >> 4
            if packet_type == PUBLISH and self._take_publish(first & 0x0F, buffer, start, end):
                continue
            session = self.session
            if packet_type in (RESERVED_0, RESERVED_15):
                log.warning(
                    "%s sent a reserved packet type: closing", session and session.client_id
                )
                await self.handle_connection_closed()
                continue
            fixed_header = MQTTFixedHeader(packet_type, first & 0x0F, end - start)
            try:
                packet = await packet_class(fixed_header).from_stream(
                    BufferReader(bytes(buffer[start:end])), fixed_header=fixed_header
                )
            except (MQTTError, NoDataError) as exc:  # amqtt discards it and reads on
                log.debug("packet discarded: %r", exc)
                continue
            await self.plugins_manager.fire_event(
                MQTTEvents.PACKET_RECEIVED, packet=packet, session=session
            )
            if packet_type == CONNECT:
                # as amqtt: handled before any later packet of the connection
                await self.handle_connect(packet)
                continue
            if packet_type == DISCONNECT:
                # At once, not as a task, and remembered: the socket's EOF may be in this
                # very read, and amqtt's disconnect waiter can be made or read after this
                # (a None result there means "died": the Will would be sent). Tasks of
                # earlier packets still run before the broker sees the disconnect.
                self.disconnect_received = True
                await self.handle_disconnect(packet)
                continue
            handle = self._packet_handlers.get(packet_type)
            if handle is not None:
                running_tasks.append(asyncio.create_task(handle(packet)))
        return offset

    def _handlers(self) -> dict[int, Callable[[Any], Coroutine[Any, Any, None]]]:
        """amqtt's handler of each packet type (CONNECT and DISCONNECT aside), each run as a
        task."""
        return {
            CONNACK: self.handle_connack,
            SUBSCRIBE: self.handle_subscribe,
            UNSUBSCRIBE: self.handle_unsubscribe,
            SUBACK: self.handle_suback,
            UNSUBACK: self.handle_unsuback,
            PUBACK: self.handle_puback,
            PUBREC: self.handle_pubrec,
            PUBREL: self.handle_pubrel,
            PUBCOMP: self.handle_pubcomp,
            PINGREQ: self.handle_pingreq,
            PINGRESP: self.handle_pingresp,
            PUBLISH: self.handle_publish,
        }

    def _take_publish(self, flags: int, buffer: bytearray, start: int, end: int) -> bool:
        """Queue the PUBLISH in ``buffer[start:end]`` for storage if it is telemetry the
        device may send, at QoS 0 or 1; False leaves it to amqtt's path (which also
        refuses what is malformed, as before)."""
        qos = (flags >> 1) & 0x03
        session = self.session
        if qos > QOS_1 or session is None or not session.client_id or end - start < 2:
            return False
        topic_end = start + 2 + (buffer[start] << 8 | buffer[start + 1])
        data_start = topic_end + 2 if qos else topic_end
        if data_start > end:
            return False
        try:
            topic = buffer[start + 2 : topic_end].decode()
        except UnicodeDecodeError:
            return False
        if "#" in topic or "+" in topic:
            return False  # amqtt refuses wildcards in a PUBLISH topic [MQTT-3.3.2-2]
        client_id = session.client_id
        hub_client_id: str | None = getattr(session, "iiot_hub_client_id", None)
        if hub_client_id is not None:
            native = hub_telemetry_topic(hub_client_id, client_id, topic)
            if native is None:
                return False  # a twin request, or a property bag refused: logged there
            topic = native
        parsed = device_publication(client_id, topic)  # the ACL, on every PUBLISH
        if parsed is None or parsed.kind is not TopicKind.TELEMETRY:
            return False
        packet_id = buffer[topic_end] << 8 | buffer[topic_end + 1] if qos else 0
        self.iiot_broker.ingest.offer(
            client_id,
            parsed,
            bytes(buffer[data_start:end]),
            sink=self if qos == QOS_1 else None,
            packet_id=packet_id,
        )
        return True

    # acknowledging what the ingest stored (PubackSink) ---------------------------------

    def queue_puback(self, packet_id: int) -> None:
        self._pubacks.append(packet_id)

    def flush_pubacks(self) -> None:
        """Every queued PUBACK in one write; nothing if the connection is gone (the
        messages are stored: the device's resend is a duplicate and skipped)."""
        ids, self._pubacks = self._pubacks, []
        if ids and self.writer is not None:
            self.writer.write(b"".join([_PUBACK.pack(_PUBACK_TYPE, 2, i) for i in ids]))

    def ingest_failed(self, exc: Exception) -> None:
        """Not stored: no PUBACK; the connection is closed so the device sends it again."""
        self._pubacks = []
        client_id = self.session.client_id if self.session is not None else None
        log.warning("messages from %s not stored (%s): closing its connection", client_id, exc)
        self._closing = asyncio.ensure_future(self.handle_connection_closed())

    # amqtt's path: twin patches, IoT Hub twin requests, what the fast path left --------

    async def handle_publish(self, publish_packet: PublishPacket) -> None:
        session = self.session
        hub_client_id: str | None = getattr(session, "iiot_hub_client_id", None)
        if session is not None and session.client_id and hub_client_id is not None:
            # the IoT Hub dialect's telemetry topic stands for a native one: from here on
            # the message is the device's like any other (ACL, de-duplication, storage)
            native = hub_telemetry_topic(
                hub_client_id, session.client_id, publish_packet.topic_name or ""
            )
            if native is not None:
                publish_packet.topic_name = native
            elif await self._hub_twin_request(session, publish_packet):
                return
            elif (publish_packet.topic_name or "").startswith(f"devices/{hub_client_id}/"):
                log.warning(
                    "%s: %s not taken (property bag refused, see hub_telemetry_topic)",
                    hub_client_id,
                    publish_packet.topic_name,
                )
        topic, data = publish_packet.topic_name, publish_packet.data
        qos = publish_packet.qos
        if (
            session is None
            or not session.client_id
            or topic is None
            or data is None
            or qos not in (QOS_0, QOS_1)
            or not _acked_when_handled(session.client_id, topic)
        ):
            await super().handle_publish(publish_packet)
            return
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        message = _Telemetry(publish_packet, stored)
        message.publish_packet = publish_packet
        # no await before this: the hook's tasks start in arrival order
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_RECEIVED, client_id=session.client_id, message=message
        )
        if qos == QOS_0:
            return
        try:
            await stored
        except Exception as exc:  # not stored: no PUBACK, the device sends it again
            log.warning(
                "message from %s not stored (%s): closing its connection", session.client_id, exc
            )
            await self.handle_connection_closed()
            return
        puback = PubackPacket.build(message.packet_id)
        await self._send_packet(puback)
        message.puback_packet = puback

    async def _hub_twin_request(self, session: Session, publish_packet: PublishPacket) -> bool:
        """An IoT Hub twin GET or reported PATCH (QoS 0 or 1), answered on
        ``$iothub/twin/res/…`` to this session, then acknowledged; False if the PUBLISH is
        not one (amqtt's own path and the ACL take it)."""
        request = parse_hub_twin_request(publish_packet.topic_name or "")
        if request is None or publish_packet.qos not in (QOS_0, QOS_1):
            return False
        kind, request_id = request
        await self.iiot_broker.answer_hub_twin_request(
            session, kind, request_id, publish_packet.data
        )
        header = publish_packet.variable_header
        if publish_packet.qos == QOS_1 and header is not None and header.packet_id is not None:
            await self._send_packet(PubackPacket.build(header.packet_id))
        return True


__all__ = ["READ_SIZE", "IngestingHandler", "next_frame"]
