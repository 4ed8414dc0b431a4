"""The platform's MQTT broker: amqtt 0.12.1, hardened, asking the platform's services.

:class:`PlatformBroker` subclasses amqtt's ``Broker`` to close upstream flaws
(``docs/amqtt-retained-acl-bypass.md``, ``docs/amqtt-session-hijack-before-auth.md``,
and issue 10: Wills outside the ACL, sockets never closed, unbounded packets) and to let
the platform end sessions: amqtt authenticates only at CONNECT, so revoking, deleting or
expiring a device's Registration Token must disconnect it from here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import amqtt
from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker, Server
from amqtt.contexts import Action
from amqtt.events import BrokerEvents
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import IncomingApplicationMessage, Session
from amqtt.utils import gen_client_id
from transitions import MachineError

from ..domain.errors import DomainError
from ..domain.leaks import SessionSighting
from ..domain.topics import (
    TopicAction,
    TopicKind,
    cloud_to_device_topic,
    device_may,
    hub_desired_topic,
    hub_telemetry_topic,
    hub_twin_response_topic,
    parse_topic,
    subscribes_to_cloud_to_device,
    twin_topic,
)
from ..domain.twin import with_version
from ..events import RegistrationEnded
from ..services import Services
from ..services.registration import MqttIdentity
from ..services.twin import Section
from .connections import (
    AbortableStreamWriter,
    ChunkReader,
    PacketSizeLimit,
    close_connection,
    connection_limit,
    max_packet_size,
)
from .handler import IngestingHandler
from .ingest import TelemetryIngest
from .sessions import install as install_light_sessions

log = logging.getLogger(__name__)

if amqtt.__version__ != "0.12.1":  # pragma: no cover - the overrides below track its internals
    raise ImportError(
        f"iiot_server.broker is written against amqtt 0.12.1, found {amqtt.__version__}"
    )


@dataclass
class _Live:
    """What the platform knows of a connected device's session."""

    session: Session
    identity: MqttIdentity
    expiry: asyncio.Task[None] | None = None


class _SubscriptionTable(dict[str, list[tuple[Session, int]]]):
    """amqtt's topic filter → subscribers table, with a repr that does not list them:
    amqtt logs ``repr(self._subscriptions)`` at debug level on every SUBSCRIBE whether or
    not debug is on, the repr of every session of the broker. With 1,000 devices that was
    the largest share of the platform's CPU while a hybrid run started (py-spy, issue 18)."""

    def __repr__(self) -> str:
        return f"<{len(self)} topic filters>"


class PlatformBroker(Broker):
    """amqtt's broker with platform authentication, device-scoped ACL and session control."""

    def __init__(self, config: dict[str, Any], services: Services) -> None:
        super().__init__(config)
        install_light_sessions()
        self._subscriptions = _SubscriptionTable()
        self._filters_of: dict[str, set[str]] = {}
        """Client id → its topic filters: what amqtt finds by scanning every filter of the
        broker (on each disconnect, on each CONNECT for retained messages)."""
        self._done: asyncio.Future[None] | None = None
        self.services = services
        self._live: dict[str, _Live] = {}
        self.ingest = TelemetryIngest(services.messages, services.settings, services.clock)
        self._tasks: set[asyncio.Future[None]] = set()
        self.open_connections = 0
        self._connection_limit = connection_limit(services.settings)
        # registration_ended events per Device ID, to catch a revoke that lands between a
        # CONNECT's token check and the record of its session (issue 10, item 4)
        self._registration_endings: dict[str, int] = {}
        self._listeners: list[tuple[str, Any]] = [
            ("registration_ended", self._on_registration_ended),
            ("registration_superseded", self._on_registration_superseded),
            ("desired_changed", self._on_desired_changed),
            ("cloud_to_device_queued", self._on_cloud_to_device_queued),
        ]
        self._c2d_sending: dict[str, asyncio.Lock] = {}
        for event, listener in self._listeners:
            services.events.subscribe(event, listener)

    # lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await super().start()
        self.ingest.start()

    async def shutdown(self) -> None:
        for event, listener in self._listeners:
            self.services.events.unsubscribe(event, listener)
        for live in self._live.values():
            if live.expiry is not None:
                live.expiry.cancel()
        await super().shutdown()
        await self.ingest.stop()  # every accepted message is stored before we stop

    @property
    def port(self) -> int:
        server: Server = self._servers["default"]
        sockets = getattr(server.instance, "sockets", None) or []
        return int(sockets[0].getsockname()[1])

    @property
    def dropped_messages(self) -> int:
        """Telemetry taken without a waiter (QoS 0, Wills) that was not stored."""
        return self.ingest.dropped_messages

    # connections: limited, CONNECT in time and in size, always closed (issue 10) -----

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        await self._client_connected(
            listener_name, ChunkReader(reader), AbortableStreamWriter(writer)
        )

    async def _client_connected(
        self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter
    ) -> None:
        """amqtt's, closing the connection on every way out: it returned without closing
        when the peer ended before a valid CONNECT (EOF, garbage), so each such socket
        stayed in CLOSE-WAIT. Adds a connection limit (beyond it a connection is closed at
        once; amqtt's own limit queues sockets on a semaphore, holding their descriptors),
        a CONNECT timeout and packet size limits (:class:`PacketSizeLimit`)."""
        if self.open_connections >= self._connection_limit:
            log.warning("%d MQTT connections open: refusing one more", self.open_connections)
            await close_connection(writer)
            return
        self.open_connections += 1
        settings = self.services.settings
        bounded = PacketSizeLimit(
            reader,
            first_packet_limit=settings.mqtt_max_connect_size,
            limit=max_packet_size(settings),
        )
        try:
            await self._serve_connection(listener_name, bounded, writer)
        except Exception as exc:  # whatever the peer sent: log it, never leak the socket
            log.info("MQTT connection ended: %r", exc)
        finally:
            self.open_connections -= 1
            await close_connection(writer)

    async def _serve_connection(
        self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter
    ) -> None:
        server = self._servers[listener_name]
        peer = writer.get_peer_info()
        if peer is None:
            return
        timeout = self.services.settings.mqtt_connect_timeout
        try:
            handler, session = await asyncio.wait_for(
                self._initialize_client_session(reader, writer, *peer), timeout
            )
        except TimeoutError:
            log.info("no CONNECT from %s:%d within %.1f s: closed", *peer, timeout)
            return
        await self._handle_client_session(reader, writer, session, handler, server, listener_name)

    # flaw (b): nothing about an existing session changes before authentication -------

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        """The CONNECT as a new session, always. amqtt deleted a clean session's
        predecessor, or copied the CONNECT's Will, keep-alive and credentials onto an
        existing persistent session, while parsing, before authentication; here both wait
        for :meth:`_adopt_session`, after authentication and the Will check."""
        handler, session = await BrokerProtocolHandler.init_from_connect(
            reader, writer, self.plugins_manager
        )
        handler.__class__ = IngestingHandler  # amqtt names its handler class inline
        # amqtt's broker never fills these in; leak detection compares them at a takeover
        session.remote_address, session.remote_port = remote_address, remote_port
        handler.iiot_broker = self  # type: ignore[attr-defined]
        session.iiot_clean_start = session.clean_session and bool(session.client_id)  # type: ignore[attr-defined]
        if session.clean_session and not session.client_id:
            session.client_id = gen_client_id()
        session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    def _adopt_session(self, incoming: Session) -> Session:
        """The session to continue: ``incoming``, or for a persistent CONNECT the existing
        session of the same client id, given the new CONNECT's Will (retain flag
        included, which amqtt forgot), keep-alive and credentials."""
        existing = None if incoming.clean_session else self._sessions.get(incoming.client_id or "")
        if existing is None:
            return incoming
        session = existing[0]
        for name in (
            "will_flag",
            "will_message",
            "will_topic",
            "will_qos",
            "will_retain",
            "keep_alive",
            "username",
            "password",
            "iiot_identity",
            "iiot_authenticated",
            "iiot_auth_epoch",
            "iiot_hub_client_id",
        ):
            setattr(session, name, getattr(incoming, name, None))
        session.iiot_clean_start = False  # type: ignore[attr-defined]
        session.iiot_ended = False  # type: ignore[attr-defined]
        session.parent = 1
        return session

    async def _check_takeover(self, device_id: str, previous: Session, newcomer: Session) -> None:
        """Leak detection's rules (a) and (d) on a takeover (``services/alerts.py``); an
        automatic revocation it triggers ends the newcomer's session too (its CONNECT's
        registration epoch is stale: :meth:`session_connected`)."""
        try:
            await self.services.alerts.connection_taken_over(
                device_id, _sighting(previous), _sighting(newcomer)
            )
        except Exception:  # detection never stops a CONNECT
            log.exception("leak detection on the takeover of %s failed", device_id)

    @staticmethod
    def _will_refusal(session: Session) -> str | None:
        """Why a CONNECT's Will is refused, or None.

        A Will is a PUBLISH the broker makes for the device when it dies, so its topic must
        pass the same ACL as the device's own PUBLISH (``device_may``); a retained Will is
        refused outright (no device topic is retained: a retained Will on another device's
        ``twin/res`` was replayed to every later subscriber).

        Refused at CONNECT with return code 5 "not authorized", rather than the Will
        dropped at death as mosquitto does (``context__send_will`` checks the ACL only when
        it sends): mosquitto's ACLs can change while a client is connected, ours are a pure
        function of the Device ID and the topic, so the answer at CONNECT is final, and a
        device that asked for a Will it cannot have learns it at once, not after it died
        (MQTT 5 likewise refuses a CONNECT whose Will Retain the server does not support,
        [MQTT-3.2.2-13]). The check is repeated at death (:meth:`_handle_disconnect`).
        """
        if not session.will_flag:
            return None
        if session.will_retain:
            return "a retained Will"
        topic = session.will_topic
        if not topic or not device_may(session.client_id or "", TopicAction.PUBLISH, topic):
            return f"a Will on {topic!r}"
        return None

    async def _authenticate(self, session: Session, listener: Any) -> bool:
        cached: bool | None = getattr(session, "iiot_authenticated", None)
        if cached is None:
            cached = await super()._authenticate(session, listener)
            session.iiot_authenticated = cached  # type: ignore[attr-defined]
        return cached

    async def _handle_client_session(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        client_session: Session,
        handler: BrokerProtocolHandler,
        server: Server,
        listener_name: str,
    ) -> None:
        refusal = (
            None
            if await self._authenticate(client_session, self.listeners_config[listener_name])
            else "bad credentials"
        )
        refusal = refusal or self._will_refusal(client_session)
        if refusal is not None:
            # Refuse without touching the registry of live sessions: amqtt would file the
            # refused session under the victim's client id and orphan the victim.
            log.info("CONNECT of %r refused: %s", client_session.client_id, refusal)
            handler.attach(client_session, reader, writer)
            await handler.mqtt_connack_authorize(False)  # return code 5, not authorized
            await writer.close()
            return
        client_session = self._adopt_session(client_session)
        client_id = client_session.client_id
        assert client_id is not None
        existing = self._sessions.get(client_id)
        if existing is not None and existing[0] is not client_session:
            old_session, old_handler = existing
            if old_session.transitions.is_connected():
                # one live connection per Device ID: the newcomer takes over
                log.info("client id %s taken over by a new connection", client_id)
                await self.services.devices.record_connection(
                    client_id, connected=True, takeover=True
                )
                await old_handler.handle_connection_closed()
                await old_handler.stop()
                await self._check_takeover(client_id, old_session, client_session)
        if getattr(client_session, "iiot_clean_start", False):
            await self._delete_session(client_id)
        # amqtt 0.12.1's own steps from here (the rest of its _handle_client_session, whose
        # authentication is done above), but for a resumed session's retained messages
        # only its own topic filters are visited: amqtt awaits a call for every filter of
        # the whole broker on every CONNECT, ~3,000 with 1,000 devices (~0.6 ms of the
        # platform's CPU a CONNECT; ~8 % of it in a hybrid run's token refresh storm)
        while True:
            try:
                client_session.transitions.connect()
                break
            except (MachineError, ValueError):
                if client_session.transitions.is_connected():  # taken over after all
                    old_session, old_handler = self._sessions[client_id]
                    await old_handler.handle_connection_closed()
                    await old_handler.stop()
                    break
                await asyncio.sleep(1)  # amqtt's "reconnecting too quickly": wait
        handler.attach(client_session, reader, writer)
        self._sessions[client_id] = (client_session, handler)
        await handler.mqtt_connack_authorize(True)
        await self.plugins_manager.fire_event(
            BrokerEvents.CLIENT_CONNECTED, client_id=client_id, client_session=client_session
        )
        await handler.start()
        await self._publish_session_retained_messages(client_session)
        for topic_filter in list(self._filters_of.get(client_id, ())):
            await self._publish_retained((topic_filter, QOS_0), client_session)
        await self._client_message_loop(client_session, handler)

    async def _client_message_loop(
        self, client_session: Session, handler: BrokerProtocolHandler
    ) -> None:
        await super()._client_message_loop(client_session, handler)
        # amqtt leaves what the client sent (and was acknowledged) just before it
        # disconnected in the session's queue: deliver it rather than lose it
        queue = client_session.delivered_message_queue
        loop = asyncio.get_running_loop()
        while not queue.empty():
            delivered: asyncio.Future[Any] = loop.create_future()
            delivered.set_result(queue.get_nowait())
            await self._handle_message_delivery(client_session, handler, delivered)

    async def _handle_disconnect(
        self,
        client_session: Session,
        handler: BrokerProtocolHandler,
        disconnect_waiter: asyncio.Future[Any],
    ) -> None:
        """amqtt's, with the Will taken out of its hands: amqtt broadcast (and retained)
        it with no topic check. A permitted Will goes only to the device's own telemetry,
        ``twin/get`` or ``twin/reported`` topics, which no device receives, so it is handled
        as if the device had published it at QoS 0 as it died: telemetry is stored, a
        reported patch applied. Never after a clean DISCONNECT, and never when the platform
        itself ended the session (revoked, deleted, expired): that device is not trusted."""
        clean = isinstance(disconnect_waiter.result(), DisconnectPacket) or (
            isinstance(handler, IngestingHandler) and handler.disconnect_received
        )
        will = self._take_will(client_session, clean)
        if will is not None:
            await self.plugins_manager.fire_event(
                BrokerEvents.MESSAGE_RECEIVED, client_id=client_session.client_id, message=will
            )
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)

    def _take_will(self, session: Session, clean: bool) -> IncomingApplicationMessage | None:
        if not session.will_flag:
            return None
        session.will_flag = False  # amqtt's own path must neither publish nor retain it
        if clean:  # the device sent DISCONNECT
            return None
        if getattr(session, "iiot_ended", False):
            log.info("Will of %s dropped: the platform ended its session", session.client_id)
            return None
        refusal = self._will_refusal(session)  # checked at CONNECT; again, as mosquitto does
        if refusal is not None or session.will_topic is None or session.will_message is None:
            log.warning("Will of %s dropped: %s", session.client_id, refusal)
            return None
        return IncomingApplicationMessage(
            None, session.will_topic, QOS_0, bytes(session.will_message), False
        )

    # broadcasts: a snapshot of the subscriptions, and only the filters that can match ---

    def _candidate_filters(self, topic: str) -> list[tuple[str, list[tuple[Session, int]]]]:
        """Subscriptions whose filter may match ``topic``. A device's topic can only be
        matched by that device's own filters (the ACL allows nothing else), so for
        ``devices/{id}/...`` only those few are looked at instead of every filter."""
        parsed = parse_topic(topic)
        if parsed is None:
            return [(f, list(subs)) for f, subs in list(self._subscriptions.items())]
        prefix = f"devices/{parsed.device_id}/"
        names = (topic, f"{prefix}#", f"{prefix}twin/+")
        return [(f, list(self._subscriptions[f])) for f in names if f in self._subscriptions]

    async def _run_broadcast(self, running_tasks: deque[asyncio.Task[Any]]) -> None:
        """amqtt 0.12.1's, iterating a snapshot: it iterated the live subscription dict
        across awaits, so a device subscribing or leaving meanwhile raised
        ``RuntimeError: dictionary changed size during iteration`` and the message
        (a twin answer, a desired patch) was lost."""
        broadcast = await self._broadcast_queue.get()
        topic = broadcast["topic"]
        for k_filter, subscriptions in self._candidate_filters(topic):
            if not self._matches(topic, k_filter):
                continue
            for target_session, sub_qos in subscriptions:
                qos = broadcast.get("qos", sub_qos)
                if not await self._topic_filtering(
                    target_session, topic=topic, action=Action.RECEIVE
                ):
                    continue
                if (
                    target_session.transitions.state != "connected"
                    and not target_session.clean_session
                    and qos in (QOS_1, QOS_2)
                    and not target_session.is_anonymous
                ):
                    await self._retain_broadcast_message(broadcast, qos, target_session)
                    continue
                if target_session.transitions.state != "connected":
                    continue
                handler = self._get_handler(target_session)
                if handler:
                    running_tasks.append(
                        asyncio.ensure_future(
                            handler.mqtt_publish(topic, broadcast["data"], qos, retain=False)
                        )
                    )

    # flaw (a): retained messages only on the session's own, permitted subscriptions ---

    def _publish_retained_messages_for_subscription(  # type: ignore[override]
        self, subscription: tuple[str, int], session: Session
    ) -> Awaitable[None]:
        """amqtt awaits this for every topic filter of the broker on every CONNECT (for a
        resumed session's retained messages); only the session's own filters concern it.
        The others get an awaitable that is already done, not a coroutine each: with
        1,000 devices that was 3,000 coroutines per CONNECT (issue 18)."""
        if subscription[0] not in self._filters_of.get(session.client_id or "", ()):
            if self._done is None:
                self._done = asyncio.get_running_loop().create_future()
                self._done.set_result(None)
            return self._done  # awaiting a done future returns at once
        return self._publish_retained(subscription, session)

    async def _publish_retained(self, subscription: tuple[str, int], session: Session) -> None:
        topic_filter, qos = subscription
        handler = self._get_handler(session)
        if handler is None:
            return
        tasks = []
        for topic, retained in list(self._retained_messages.items()):
            if not self._matches(topic, topic_filter):
                continue
            if not await self._topic_filtering(session, topic, Action.RECEIVE):
                continue
            tasks.append(
                asyncio.ensure_future(
                    handler.mqtt_publish(
                        retained.topic, retained.data, min(qos, retained.qos or qos), retain=True
                    )
                )
            )
        if tasks:
            await asyncio.wait(tasks)

    # sessions the platform ends ------------------------------------------------------

    def session_connected(self, session: Session) -> None:
        """Called by the events plugin once a device's CONNECT was accepted."""
        identity: MqttIdentity | None = getattr(session, "iiot_identity", None)
        if identity is None or session.client_id is None:
            return
        previous = self._live.pop(session.client_id, None)
        if previous is not None and previous.expiry is not None:
            previous.expiry.cancel()
        live = _Live(session, identity)
        session.iiot_connected_at = self.services.clock.now()  # type: ignore[attr-defined]
        self._live[session.client_id] = live
        self._arm_expiry(live, identity.expires_at)
        if getattr(session, "iiot_auth_epoch", None) != self.registration_epoch(session.client_id):
            # the registration ended after the token check began, before the session was
            # recorded here, where the event would have found it: check the token again
            self._spawn(self._recheck(live))

    def registration_epoch(self, device_id: str) -> int:
        """How many times the device's registration ended (revoked, deleted, reprovisioned)
        while this broker ran; read before a CONNECT's token check, compared once its
        session is recorded (see :meth:`session_connected`)."""
        return self._registration_endings.get(device_id, 0)

    async def check_credentials(self, session: Session) -> MqttIdentity | None:
        """The device a session's credentials prove, in either dialect: the IoT Hub one
        (``iiot_hub_client_id`` set, a SAS password) or the native one (an ``mp_``
        password). Both end up bound to a usable Registration Token of the device."""
        hub_client_id: str | None = getattr(session, "iiot_hub_client_id", None)
        registration = self.services.registration
        if hub_client_id is not None:
            return await registration.authenticate_sas(
                hub_client_id, session.username, session.password
            )
        return await registration.authenticate_mqtt(
            session.client_id, session.username, session.password
        )

    @staticmethod
    def adopt_hub_identity(session: Session, device_id: str) -> None:
        """Make an authenticated IoT Hub dialect session the device's own: its client id
        becomes the Device ID, so both dialects share the live-session registry, the ACL,
        the revocation switch and the takeover rule (a hub connection takes over a native
        one of the same device and vice versa). Its Will, if on the device's hub telemetry
        topic, is translated like its PUBLISHes; any other Will topic is left to the ACL."""
        hub_client_id = session.client_id or ""
        session.client_id = device_id
        if session.will_flag and session.will_topic:
            native = hub_telemetry_topic(hub_client_id, device_id, session.will_topic)
            if native is not None:
                session.will_topic = native

    async def _recheck(self, live: _Live) -> None:
        session = live.session
        identity = await self.check_credentials(session)
        if (
            identity is None
            or identity.registration_token_id != live.identity.registration_token_id
        ):
            log.info("%s authenticated as its registration ended: disconnecting", session.client_id)
            await self._disconnect(session)

    def session_disconnected(self, session: Session) -> bool:
        """Forget a session; True if it was the device's current one."""
        live = self._live.get(session.client_id or "")
        if live is None or live.session is not session:
            return False
        if live.expiry is not None:
            live.expiry.cancel()
        del self._live[session.client_id or ""]
        return True

    def _arm_expiry(self, live: _Live, until: datetime | None) -> None:
        if live.expiry is not None:
            live.expiry.cancel()
        live.expiry = None if until is None else asyncio.create_task(self._expire(live, until))

    async def _expire(self, live: _Live, until: datetime) -> None:
        clock = self.services.clock
        while clock.now() < until:
            await clock.sleep((until - clock.now()).total_seconds())
        log.info("credentials of %s ran out: disconnecting", live.session.client_id)
        await self._disconnect(live.session)

    def _on_registration_ended(self, device_id: str, reason: RegistrationEnded) -> None:
        self._registration_endings[device_id] = self.registration_epoch(device_id) + 1
        live = self._live.get(device_id)
        if live is not None:
            log.info("registration of %s ended (%s): disconnecting", device_id, reason)
            self._spawn(self._disconnect(live.session))

    def _on_registration_superseded(self, device_id: str, token_id: str, until: datetime) -> None:
        live = self._live.get(device_id)
        if live is not None and live.identity.registration_token_id == token_id:
            self._arm_expiry(live, until)

    async def _disconnect(self, session: Session) -> None:
        entry = self._sessions.get(session.client_id or "")
        if entry is None or entry[0] is not session:
            return
        session.iiot_ended = True  # type: ignore[attr-defined]  # its Will is not sent
        handler = entry[1]
        await handler.handle_connection_closed()
        await handler.stop()

    async def disconnect_device(self, device_id: str) -> bool:
        """End the device's live session, if any."""
        live = self._live.get(device_id)
        if live is None:
            return False
        await self._disconnect(live.session)
        return True

    # twin ----------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)  # keep a reference until done (asyncio holds only weak ones)
        task.add_done_callback(self._tasks.discard)

    def _on_desired_changed(self, device_id: str, patch: dict[str, Any]) -> None:
        self._spawn(self._send(device_id, "desired", patch))
        live = self._live.get(device_id)
        version = patch.get("$version")
        hub = live is not None and getattr(live.session, "iiot_hub_client_id", None) is not None
        if live is not None and hub and isinstance(version, int):
            self._spawn(self._send_to_session(live.session, hub_desired_topic(version), patch))

    async def _send_to_session(
        self, session: Session, topic: str, body: dict[str, Any] | None
    ) -> None:
        """Send to one session only, at QoS 0: the ``$iothub/…`` topics name no device, so
        they are never broadcast. A lost answer or patch is recovered by the SDK itself: it
        asks for the full twin after every reconnection (``handlers/twins.rs``) and on a
        desired ``$version`` that is not its own + 1."""
        handler = self._get_handler(session)
        if handler is None or session.transitions.state != "connected":
            return
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        await handler.mqtt_publish(topic, data, QOS_0, retain=False)

    async def answer_hub_twin_request(
        self, session: Session, kind: TopicKind, request_id: str, payload: bytes | None
    ) -> None:
        """IoT Hub's twin over MQTT on the device's one twin: a GET is answered
        ``res/200`` with ``{"desired": {…, "$version"}, "reported": {…, "$version"}}``, a
        reported PATCH (a JSON merge patch) ``res/204`` with the new reported ``$version``
        in the topic; a refused patch ``res/400`` with ``{"message": …}``, a failure
        ``res/500``."""
        from ..domain.documents import decode_json_document  # as _answer_twin_request

        device_id = session.client_id or ""
        twins = self.services.twins
        try:
            if kind is TopicKind.TWIN_REPORTED:
                body = decode_json_document(payload or b"{}", field="reported")
                twin = await twins.patch(device_id, Section.REPORTED, body)
                topic = hub_twin_response_topic(204, request_id, twin.reported.version)
                await self._send_to_session(session, topic, None)
                return
            twin = await twins.get(device_id)
            answer = {
                "desired": with_version(twin.desired.properties, twin.desired.version),
                "reported": with_version(twin.reported.properties, twin.reported.version),
            }
            await self._send_to_session(session, hub_twin_response_topic(200, request_id), answer)
        except (ValueError, DomainError) as exc:
            log.info("twin request from %s refused: %s", device_id, exc)
            topic = hub_twin_response_topic(400, request_id)
            await self._send_to_session(session, topic, {"message": str(exc)})
        except Exception:
            log.exception("twin request from %s failed", device_id)
            await self._send_to_session(session, hub_twin_response_topic(500, request_id), None)

    # cloud-to-device messages -------------------------------------------------------

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        """amqtt's, then the device's waiting cloud-to-device messages once it subscribes
        to their topic (sent before, they would reach a client not listening yet)."""
        granted: int = await super().add_subscription(subscription, session)
        device_id = session.client_id or ""
        if granted != 0x80:
            self._filters_of.setdefault(device_id, set()).add(subscription[0])
        live = self._live.get(device_id)
        if (
            granted != 0x80
            and live is not None
            and live.session is session
            and subscribes_to_cloud_to_device(subscription[0], _topic_device_id(session))
        ):
            self._spawn(self._send_cloud_to_device(device_id))
        return granted

    def _on_cloud_to_device_queued(self, device_id: str) -> None:
        if device_id in self._live:
            self._spawn(self._send_cloud_to_device(device_id))

    def _listens_to_cloud_to_device(self, session: Session) -> bool:
        topic_id = _topic_device_id(session)
        return any(
            subscribes_to_cloud_to_device(topic_filter, topic_id)
            and any(s is session for s, _ in self._subscriptions.get(topic_filter, ()))
            for topic_filter in self._filters_of.get(session.client_id or "", ())
        )

    # subscriptions found through the client's own filters, not a scan of all ---------

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        deleted: int = super()._del_subscription(a_filter, session)
        if deleted:
            filters = self._filters_of.get(session.client_id or "")
            if filters is not None:
                filters.discard(a_filter)
                if not filters:
                    del self._filters_of[session.client_id or ""]
        return deleted

    async def _del_all_subscriptions(self, session: Session) -> None:
        """amqtt's, over the session's own filters instead of every filter of the broker."""
        for topic_filter in list(self._filters_of.get(session.client_id or "", ())):
            self._del_subscription(topic_filter, session)
            if not self._subscriptions.get(topic_filter, True):
                del self._subscriptions[topic_filter]

    async def _send_cloud_to_device(self, device_id: str) -> None:
        """Send the device's waiting messages in order, each at QoS 1, marking each
        delivered at its PUBACK; stop at the first one not acknowledged (the session ended,
        or no PUBACK within amqtt's 5 s): it waits for the next session. One sender per
        device at a time, so a message is never sent twice on one session."""
        lock = self._c2d_sending.setdefault(device_id, asyncio.Lock())
        async with lock:
            service = self.services.cloud_to_device
            while True:
                live = self._live.get(device_id)
                if live is None or not self._listens_to_cloud_to_device(live.session):
                    return
                handler = self._get_handler(live.session)
                waiting = await service.pending(device_id)
                if handler is None or not waiting:
                    return
                topic_id = _topic_device_id(live.session)
                for message in waiting:
                    topic = cloud_to_device_topic(topic_id, message.message_id, message.properties)
                    try:
                        await handler.mqtt_publish(topic, message.payload, QOS_1, retain=False)
                    except Exception as exc:
                        log.info("cloud-to-device to %s not acknowledged: %r", device_id, exc)
                        return
                    await service.delivered(message.message_id)

    async def _send(self, device_id: str, suffix: str, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        await self.internal_message_broadcast(twin_topic(device_id, suffix), data, 1)

    def twin_request(
        self,
        device_id: str,
        kind: TopicKind,
        payload: bytes,
        handled: asyncio.Future[None] | None = None,
    ) -> None:
        """A device's ``twin/get`` or ``twin/reported``, answered in the background (the
        message hook must not wait); ``handled`` completes once it was applied (or refused
        for good)."""
        self._spawn(self._twin_request(device_id, kind, payload, handled))

    async def _twin_request(
        self,
        device_id: str,
        kind: TopicKind,
        payload: bytes,
        handled: asyncio.Future[None] | None = None,
    ) -> None:
        try:
            await self._answer_twin_request(device_id, kind, payload)
        except Exception as exc:  # e.g. the database: not acknowledged, the device resends
            log.exception("twin request from %s failed", device_id)
            if handled is not None and not handled.done():
                handled.set_exception(exc)
        finally:
            if handled is not None and not handled.done():
                handled.set_result(None)

    async def _answer_twin_request(self, device_id: str, kind: TopicKind, payload: bytes) -> None:
        reported = kind is TopicKind.TWIN_REPORTED
        answer = await self.services.twins.device_request(device_id, reported, payload)
        if answer is not None:
            await self._send(device_id, "res", answer)


def _sighting(session: Session) -> SessionSighting:
    """A session as leak detection sees it: its peer address and its credentials' token."""
    identity: MqttIdentity | None = getattr(session, "iiot_identity", None)
    return SessionSighting(
        address=session.remote_address,
        port=session.remote_port,
        registration_token_id=None if identity is None else identity.registration_token_id,
        at=getattr(session, "iiot_connected_at", None),
    )


def _topic_device_id(session: Session) -> str:
    """The id a session's device topics carry: ``<workspace>:<device>`` in the IoT Hub
    dialect, the Device ID in the native one."""
    hub_client_id: str | None = getattr(session, "iiot_hub_client_id", None)
    return hub_client_id or session.client_id or ""
