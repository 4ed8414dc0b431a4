"""Mosquitto as the device-facing broker (``Settings.mqtt_broker = "mosquitto"``).

Devices talk to a mosquitto child (:mod:`.mosquitto_process`); the platform manages it and
ingests through its own MQTT connections, as a user whose name no device can have:

- **Device clients** (dynamic security, ``$CONTROL/dynamic-security/v1``): at register the
  device's client is created (username = Device ID, password = the ``mp_`` password just
  issued, role ``device/<id>``) or its password replaced, before register answers, so the
  password works as soon as the device has it. Its role lets it publish only
  ``devices/<id>/messages/#``, ``devices/<id>/twin/get`` and ``devices/<id>/twin/reported``,
  subscribe under ``devices/<id>/`` and receive only ``twin/res``, ``twin/desired`` and its
  ``messages/devicebound/#``; the default ACL access denies everything else (mosquitto
  applies the same ACL to a Will when it would send it). One password per device: the
  newest registration's (a replaced one is refused at once, and a session on it is kicked).
- **The one revocation switch**: ``registration_ended`` (revoked, deleted, re-provisioned)
  deletes the client and its role, which makes mosquitto kick its session (without its
  Will); the end of its Registration Token on the platform's clock (expiry, a refresh past
  its grace: ``registration_superseded``) does the same from a timer, as the embedded
  broker's ``_arm_expiry`` does. At start the clients left in the dynamic-security file are
  checked against the database: those without a usable token are deleted, the others' ends
  armed again.
- **Ingest**: one connection, client id ``iiotsim:ingest``, a persistent session
  (clean session off), QoS 1 subscriptions to every device's telemetry and twin requests,
  taken on the platform's loop (:mod:`.mqtt_subscriber`, why not paho there): a message is
  acknowledged to mosquitto only once the
  transaction storing it committed (telemetry, through the same
  ``MessageService.store_many``: same de-duplication by message id) or once the twin
  request was applied and answered.

**At-least-once end to end in this mode.** A device's PUBACK comes from mosquitto when it
has queued the message for the platform's session, not from the platform. From then on the
message lives in mosquitto (in memory, written to ``mosquitto.db`` at its exit and every
``autosave_interval``, 10 s) until the platform's commit; mosquitto resends what the
platform has not acknowledged whenever the platform connects again. So a message
acknowledged to a device is stored once the platform is back, across a restart of the
platform (mosquitto is stopped with it by SIGTERM and saves its queue; the next start loads
it) and across a platform crash (SIGKILL: mosquitto gets SIGTERM through PDEATHSIG and saves
too). What can lose acknowledged messages: mosquitto itself killed with SIGKILL or the
machine losing power (up to the last 10 s of its queue), as with any broker without
synchronous persistence. A message may be stored twice only if it has no message id
(``mid``): a redelivered message with one is de-duplicated.

**IoT Hub dialect: not served in this mode.** mosquitto routes ``$iothub/twin/res/…`` to
every subscriber of it (its topics name no device), so serving it would leak one device's
twin to another; a SAS CONNECT has no dynamic-security client and gets CONNACK 5 (not
authorised), nothing leaks. Spotflow's SDK needs the embedded broker.

**Connections**: the devices' connected state, connection events and takeover count are
recorded from mosquitto's connection log lines, which it publishes on ``$SYS/broker/log/…``
(``log_dest topic``) to the admin connection (mosquitto does the takeover itself).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from ..domain.errors import BrokerUnavailable, ValidationError
from ..domain.leaks import SessionSighting
from ..domain.tokens import registration_token_status, usable_until
from ..domain.topics import TopicKind, parse_topic, twin_topic
from ..events import RegistrationEnded
from ..services import Services
from ..services.messages import IncomingMessage, decompress
from ..store.database import from_epoch
from ..store.schema import registration_tokens
from .connections import max_packet_size
from .mosquitto_process import MosquittoProcess
from .mqtt_subscriber import PersistentSubscriber

log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
INGEST_CLIENT_ID = "iiotsim:ingest"
ADMIN_CLIENT_ID = "iiotsim:admin"
LOG_TOPIC = "$SYS/broker/log/#"
_CONNECTED = re.compile(r"New client connected from (?P<peer>\S+) as (?P<client>\S+) \(")


def _peer(text: str) -> tuple[str | None, int | None]:
    """``(address, port)`` of a log line's ``127.0.0.2:40000`` (or ``[::1]:40000``).

    >>> _peer("127.0.0.2:40000"), _peer("::1:40000")
    (('127.0.0.2', 40000), ('::1', 40000))
    """
    address, _, port = text.rpartition(":")
    return (address.strip("[]") or None, int(port) if port.isdigit() else None)


_TAKEOVER = re.compile(r"Client (\S+) already connected, closing old connection")
_DISCONNECTED = re.compile(
    r"Client (\S+) (?:disconnected|closed its connection|has exceeded timeout|been disconnected)"
    r"|Socket error on client (\S+), disconnecting|Bad socket read/write on client (\S+):"
)
INGEST_SUBSCRIPTIONS = ("devices/+/messages/#", "devices/+/twin/get", "devices/+/twin/reported")
INGEST_BATCH = 512
CONNECT_TIMEOUT = 10.0  # seconds (real time) for mosquitto to answer a connection or command
DESCRIPTION_PREFIX = "rt:"


def device_role(device_id: str) -> dict[str, Any]:
    """The dynamic-security role confining one device to its own topics."""
    prefix = f"devices/{device_id}"
    acls = [
        ("publishClientSend", f"{prefix}/messages/#"),
        ("publishClientSend", f"{prefix}/twin/get"),
        ("publishClientSend", f"{prefix}/twin/reported"),
        ("subscribePattern", f"{prefix}/#"),
        ("publishClientReceive", f"{prefix}/twin/res"),
        ("publishClientReceive", f"{prefix}/twin/desired"),
        ("publishClientReceive", f"{prefix}/messages/devicebound/#"),
    ]
    return {
        "rolename": role_name(device_id),
        "acls": [{"acltype": t, "topic": topic, "allow": True} for t, topic in acls],
    }


def role_name(device_id: str) -> str:
    return f"device/{device_id}"


@dataclass
class _DeviceClient:
    """A device's dynamic-security client as the platform set it."""

    token_id: str
    expiry: asyncio.Task[None] | None = None


RESTART_DELAY_FIRST = 0.5
"""Seconds before the first restart of a mosquitto that exited; doubled at each exit that
follows within :data:`RESTART_STABLE` seconds of its start, up to :data:`RESTART_DELAY_MAX`
(a mosquitto that cannot start is retried, not spun)."""
RESTART_DELAY_MAX = 30.0
RESTART_STABLE = 60.0
RESTART_TIMEOUT = 10.0
_BROKER_EXITED = "\x00mosquitto exited"
"""Put in the connection-log queue when mosquitto exits: its devices' disconnects are
recorded after every log line it sent before, in order."""


class _Link:
    """The admin connection: a paho client on its own network thread, feeding the
    platform's loop (dynamic-security commands, the connection log, the platform's own
    publications)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client_id: str,
        credentials: tuple[str, str],
    ) -> None:
        self.loop = loop
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
        )
        self.client.username_pw_set(*credentials)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.connected = asyncio.Event()
        self.on_connected: list[Any] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("mosquitto refused the platform's connection: %s", reason)
            return
        for callback in self.on_connected:
            callback()
        self.loop.call_soon_threadsafe(self.connected.set)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self.loop.call_soon_threadsafe(self.connected.clear)

    async def start(self, host: str, port: int) -> None:
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()
        await asyncio.wait_for(self.connected.wait(), CONNECT_TIMEOUT)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class MosquittoBroker:
    """The platform's side of a mosquitto broker: process, device clients, ingest."""

    def __init__(self, services: Services, directory: Path, host: str, port: int) -> None:
        self.services = services
        settings = services.settings
        self.process = MosquittoProcess(
            directory,
            host,
            port,
            tls_cert=settings.tls_cert_file,
            tls_key=settings.tls_key_file,
            max_packet_size=max_packet_size(settings),
        )
        self._clients: dict[str, _DeviceClient] = {}
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._correlation = itertools.count(1)
        self._ingest: deque[tuple[IncomingMessage, int, int]] = deque()
        self._ingest_arrived = asyncio.Event()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._twin_lock: dict[str, asyncio.Lock] = {}
        self.dropped_messages = 0
        self.stored_batches = 0
        self._admin: _Link | None = None
        self._subscriber: PersistentSubscriber | None = None
        self._ingest_task: asyncio.Task[None] | None = None
        self._connections: asyncio.Queue[str] = asyncio.Queue()
        self._peers: dict[str, tuple[str | None, int | None]] = {}
        """Each client id's last peer address and port (connection log lines)."""
        self._taken_over: dict[str, tuple[str | None, int | None] | None] = {}
        """Client ids taken over whose newcomer's connect line is still to come: the peer
        of the session pushed out."""
        self._connections_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self.restarts = 0
        """Times the platform started mosquitto again after it exited on its own (a start
        that failed, and was retried, counts too)."""
        self._listeners: list[tuple[str, Any]] = [
            ("registration_ended", self._on_registration_ended),
            ("registration_superseded", self._on_registration_superseded),
            ("desired_changed", self._on_desired_changed),
        ]

    @property
    def port(self) -> int:
        return self.process.port

    # lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.process.start()  # in the loop's thread: mosquitto dies with it (PDEATHSIG)
        credentials = (self.process.credentials.username, self.process.credentials.password)
        try:
            self._admin = _Link(loop, ADMIN_CLIENT_ID, credentials)
            self._admin.client.on_message = self._on_admin_message
            self._admin.on_connected.append(
                lambda: (
                    self._admin
                    and self._admin.client.subscribe([(RESPONSE_TOPIC, 1), (LOG_TOPIC, 0)])
                )
            )
            await self._admin.start(self.process.internal_host, self.process.internal_port)
            await self._dynsec({"command": "listClients"})  # the plugin answers: ready
            await self._sync_clients()
            for event, listener in self._listeners:
                self.services.events.subscribe(event, listener)
            self.services.registration.on_mqtt_password = self.set_device_password
            self._ingest_task = asyncio.create_task(self._ingest_loop(), name="iiot-ingest")
            self._connections_task = asyncio.create_task(
                self._connection_log(), name="iiot-connections"
            )
            self._subscriber = PersistentSubscriber(
                INGEST_CLIENT_ID,
                credentials,
                INGEST_SUBSCRIPTIONS,
                self._on_publish,
                timeout=CONNECT_TIMEOUT,
            )
            await self._subscriber.start(self.process.internal_host, self.process.internal_port)
            self.process.save()  # the ingest session survives a kill from now on
            self._supervisor = asyncio.create_task(self._supervise(), name="iiot-mosquitto")
        except BaseException:
            await self.shutdown()
            raise

    async def _supervise(self) -> None:
        """Start mosquitto again whenever it exits on its own (a crash, an OOM kill, a
        stray ``kill``): until then no device can connect and nothing is ingested. The
        platform's own connections (the admin link and the ingest session) reconnect by
        themselves; devices too (their SDKs retry). Their connections ended with the old
        process, which can no longer log it: recorded here, in log order."""
        delay = RESTART_DELAY_FIRST
        while True:
            process, started = self.process.process, time.monotonic()
            if process is not None:
                await _exited(process.pid)
                process.wait()
                code = process.returncode
            else:
                code = None
            if time.monotonic() - started > RESTART_STABLE:
                delay = RESTART_DELAY_FIRST
            self.restarts += 1
            log.error(
                "mosquitto exited (code %s): starting it again in %.1f s (log: %s)",
                code,
                delay,
                self.process.log_file,
            )
            self._connections.put_nowait(_BROKER_EXITED)
            admin = self._admin
            if admin is not None:  # reconnected first, below: see the connection log
                await asyncio.get_running_loop().run_in_executor(None, admin.stop)
            await asyncio.sleep(delay)
            delay = min(2 * delay, RESTART_DELAY_MAX)
            try:
                async with asyncio.timeout(RESTART_TIMEOUT):
                    await self.process.restart()
                    if admin is not None:
                        # at once, before the devices' retries (a second or more): their
                        # connect lines reach the platform only once it subscribes again
                        await admin.start(self.process.internal_host, self.process.internal_port)
            except (OSError, RuntimeError, TimeoutError) as exc:
                log.error("mosquitto did not start again: %s", exc)

    async def shutdown(self) -> None:
        """Stop ingesting (what is not committed stays unacknowledged in mosquitto's queue
        for the platform's session), then stop mosquitto (SIGTERM: it saves that queue)."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        for event, listener in self._listeners:
            self.services.events.unsubscribe(event, listener)
        if self.services.registration.on_mqtt_password == self.set_device_password:
            self.services.registration.on_mqtt_password = None
        for client in self._clients.values():
            if client.expiry is not None:
                client.expiry.cancel()
        if self._subscriber is not None:
            await self._subscriber.stop()
        for task in (self._ingest_task, self._connections_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._admin is not None:
            self._admin.stop()
        await asyncio.get_running_loop().run_in_executor(None, self.process.stop)

    # dynamic security --------------------------------------------------------------

    def _on_admin_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.topic.startswith("$SYS/"):
            line = message.payload.decode(errors="replace")
            self._admin_loop().call_soon_threadsafe(self._connections.put_nowait, line)
            return
        try:
            responses = json.loads(message.payload).get("responses", [])
        except ValueError:
            return
        self.process_responses(responses)

    def process_responses(self, responses: list[dict[str, Any]]) -> None:
        def settle() -> None:
            for response in responses:
                future = self._pending.pop(str(response.get("correlationData")), None)
                if future is not None and not future.done():
                    future.set_result(response)

        self._admin_loop().call_soon_threadsafe(settle)

    def _admin_loop(self) -> asyncio.AbstractEventLoop:
        assert self._admin is not None
        return self._admin.loop

    async def _dynsec(
        self, *commands: dict[str, Any], tolerate: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """Send dynamic-security commands in one message (applied in order); their
        responses. An error not in ``tolerate``, or no answer in time, raises
        :class:`BrokerUnavailable` (a register answers 503)."""
        assert self._admin is not None
        loop = asyncio.get_running_loop()
        futures = []
        sent = []
        for command in commands:
            correlation = str(next(self._correlation))
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._pending[correlation] = future
            futures.append(future)
            sent.append({**command, "correlationData": correlation})
        self._admin.client.publish(CONTROL_TOPIC, json.dumps({"commands": sent}), qos=1)
        try:
            responses = await asyncio.wait_for(asyncio.gather(*futures), CONNECT_TIMEOUT)
        except TimeoutError:
            raise BrokerUnavailable("mosquitto did not answer a management command") from None
        finally:
            for command in sent:
                self._pending.pop(command["correlationData"], None)
        for command, response in zip(sent, responses, strict=True):
            error = response.get("error")
            if error and not any(t in error for t in tolerate):
                raise BrokerUnavailable(f"mosquitto refused {command['command']}: {error}")
        return list(responses)

    async def set_device_password(
        self, device_id: str, token_id: str, password: str, until: datetime | None
    ) -> None:
        """The device's client with this password, bound to this Registration Token until
        ``until`` (None: no end); a session on an earlier password is kicked."""
        description = f"{DESCRIPTION_PREFIX}{token_id}"
        if device_id in self._clients:
            await self._dynsec(
                {"command": "setClientPassword", "username": device_id, "password": password},
                {"command": "modifyClient", "username": device_id, "textdescription": description},
            )
        else:
            await self._dynsec(
                {"command": "createRole", **device_role(device_id)},
                {
                    "command": "createClient",
                    "username": device_id,
                    "password": password,
                    "textdescription": description,
                    "roles": [{"rolename": role_name(device_id)}],
                },
                tolerate=("already exists",),
            )
            # createClient on an existing client (left by an earlier run) is an error:
            await self._dynsec(
                {"command": "setClientPassword", "username": device_id, "password": password},
                {"command": "modifyClient", "username": device_id, "textdescription": description},
            )
        client = self._clients.get(device_id)
        if client is None:
            client = self._clients[device_id] = _DeviceClient(token_id)
        client.token_id = token_id
        self._arm_expiry(device_id, client, until)

    async def end_device(self, device_id: str) -> None:
        """Delete the device's client and role: mosquitto kicks its session (no Will)."""
        client = self._clients.pop(device_id, None)
        if (
            client is not None
            and client.expiry is not None
            and client.expiry is not asyncio.current_task()
        ):
            client.expiry.cancel()
        await self._dynsec(
            {"command": "deleteClient", "username": device_id},
            {"command": "deleteRole", "rolename": role_name(device_id)},
            tolerate=("not found",),
        )

    def _arm_expiry(self, device_id: str, client: _DeviceClient, until: datetime | None) -> None:
        if client.expiry is not None:
            client.expiry.cancel()
        client.expiry = (
            None
            if until is None
            else asyncio.create_task(self._expire(device_id, client, until), name="iiot-expiry")
        )

    async def _expire(self, device_id: str, client: _DeviceClient, until: datetime) -> None:
        clock = self.services.clock
        while clock.now() < until:
            await clock.sleep((until - clock.now()).total_seconds())
        if self._clients.get(device_id) is client:
            log.info("credentials of %s ran out: deleting its mosquitto client", device_id)
            await self.end_device(device_id)

    def _on_registration_ended(self, device_id: str, reason: RegistrationEnded) -> None:
        log.info("registration of %s ended (%s): deleting its mosquitto client", device_id, reason)
        client = self._clients.pop(device_id, None)  # now: a register after this creates anew
        if client is not None and client.expiry is not None:
            client.expiry.cancel()
        self._spawn(self.end_device(device_id))

    def _on_registration_superseded(self, device_id: str, token_id: str, until: datetime) -> None:
        client = self._clients.get(device_id)
        if client is not None and client.token_id == token_id:
            self._arm_expiry(device_id, client, until)

    async def _sync_clients(self) -> None:
        """Clients left in the dynamic-security file by an earlier run: kept (and their ends
        armed) while their Registration Token is usable, deleted otherwise."""
        (listing,) = await self._dynsec({"command": "listClients", "verbose": True})
        clients = listing.get("data", {}).get("clients", [])
        grace = self.services.registration.grace_period
        now = self.services.clock.now()
        ids = {
            c["username"]: str(c.get("textdescription", "")).removeprefix(DESCRIPTION_PREFIX)
            for c in clients
            if c.get("username") != self.process.credentials.username
        }
        if not ids:
            return
        c = registration_tokens.c

        def tokens(conn: Any) -> dict[str, Any]:
            rows = conn.execute(registration_tokens.select().where(c.id.in_(list(ids.values()))))
            return {row._mapping[c.id]: row._mapping for row in rows}

        found = await self.services.db.read(tokens)
        for device_id, token_id in ids.items():
            row = found.get(token_id)
            if row is None or row[c.device_id] != device_id:
                await self.end_device(device_id)
                continue
            expires_at = from_epoch(row[c.expires_at])
            revoked_at = from_epoch(row[c.revoked_at])
            superseded_at = from_epoch(row[c.superseded_at])
            status = registration_token_status(
                now,
                expires_at=expires_at,
                revoked_at=revoked_at,
                superseded_at=superseded_at,
                grace_period=grace,
            )
            if not status.usable:
                await self.end_device(device_id)
                continue
            client = self._clients[device_id] = _DeviceClient(token_id)
            until = usable_until(
                expires_at=expires_at,
                revoked_at=revoked_at,
                superseded_at=superseded_at,
                grace_period=grace,
            )
            self._arm_expiry(device_id, client, until)

    # connections -------------------------------------------------------------------

    async def _connection_log(self) -> None:
        """Devices' connection state from mosquitto's connection log lines (``log_dest
        topic``: mosquitto 2.0 has no other connection events without a C plugin), in
        order: connected, disconnected, and a takeover ("already connected, closing old
        connection", then the newcomer's connect, and no disconnect of the old), recorded as
        the embedded broker does: a takeover event, then the newcomer's connect."""
        while True:
            line = await self._connections.get()
            try:
                if line == _BROKER_EXITED:
                    self._peers.clear()
                    self._taken_over.clear()
                    ended = await self.services.devices.record_all_disconnected()
                    log.warning("mosquitto exited: %d devices recorded disconnected", len(ended))
                elif match := _TAKEOVER.search(line):
                    client_id = match.group(1)
                    # the newcomer's address comes with its connect line, next
                    self._taken_over[client_id] = self._peers.get(client_id)
                    await self._record(client_id, connected=True, takeover=True)
                elif match := _CONNECTED.search(line):
                    client_id = match["client"]
                    peer = _peer(match["peer"])
                    self._peers[client_id] = peer
                    await self._record(client_id, connected=True)
                    if client_id in self._taken_over:
                        await self._check_takeover(client_id, self._taken_over.pop(client_id), peer)
                elif match := _DISCONNECTED.search(line):
                    await self._record(next(g for g in match.groups() if g), connected=False)
            except Exception:  # a database hiccup: the next line is recorded again
                log.exception("recording %r failed", line)

    async def _check_takeover(
        self,
        client_id: str,
        previous: tuple[str | None, int | None] | None,
        newcomer: tuple[str | None, int | None],
    ) -> None:
        """Leak detection's rules (a) and (d) on mosquitto's takeover, with the peers of its
        connection log lines; which token each session's password belongs to is mosquitto's
        (dynamic security), so rule (a) says ``medium`` here."""
        if client_id.startswith("iiotsim:"):
            return
        before = previous or (None, None)  # connected before the log was read: no address
        try:
            await self.services.alerts.connection_taken_over(
                client_id, SessionSighting(*before, None), SessionSighting(*newcomer, None)
            )
        except Exception:  # detection never stops the connection log
            log.exception("leak detection on the takeover of %s failed", client_id)

    async def _record(self, client_id: str, *, connected: bool, takeover: bool = False) -> None:
        if client_id.startswith("iiotsim:") or client_id == "<unknown>":
            return  # the platform's own connections, a refused CONNECT
        await self.services.devices.record_connection(
            client_id, connected=connected, takeover=takeover
        )

    # ingest ------------------------------------------------------------------------

    def _on_publish(
        self, topic: str, data: bytes, qos: int, packet_id: int, generation: int
    ) -> None:
        """A message mosquitto delivered to the ingest session (in the loop, as it arrives)."""
        parsed = parse_topic(topic)
        if parsed is None:
            self._ack(packet_id, qos, generation)
            return
        if parsed.kind in (TopicKind.TWIN_GET, TopicKind.TWIN_REPORTED):
            self._spawn(
                self._twin_request(parsed.device_id, parsed.kind, data, packet_id, qos, generation)
            )
            return
        if parsed.kind is not TopicKind.TELEMETRY or parsed.stream is None:
            self._ack(packet_id, qos, generation)
            return
        limit = self.services.settings.max_mqtt_message_size
        try:
            if len(data) > limit:
                raise ValidationError(f"{len(data)} bytes over MQTT (limit {limit})")
            payload = decompress(data, parsed.compression)
        except ValidationError as exc:  # refused for good: acknowledged, never resent
            log.warning("%s: message on %s dropped: %s", parsed.device_id, topic, exc)
            self.dropped_messages += 1
            self._ack(packet_id, qos, generation)
            return
        incoming = IncomingMessage(
            parsed.device_id, parsed.stream, payload, parsed.message_id, self.services.clock.now()
        )
        self._ingest.append((incoming, packet_id if qos else -1, generation))
        self._ingest_arrived.set()

    def _ack(self, packet_id: int, qos: int, generation: int) -> None:
        """Acknowledge one message at once (the ingest loop acknowledges a commit's together)."""
        if self._subscriber is not None and qos == 1:
            self._subscriber.queue_puback(packet_id, generation)
            self._subscriber.flush_pubacks()

    async def _ingest_loop(self) -> None:
        """Store in batches (one transaction each), then acknowledge to mosquitto. A failed
        store is retried (backing off to 5 s) with nothing acknowledged meanwhile."""
        pending = self._ingest
        while True:
            if not pending:
                self._ingest_arrived.clear()
                await self._ingest_arrived.wait()
            batch = [pending.popleft() for _ in range(min(len(pending), INGEST_BATCH))]
            delay = 0.05
            while True:
                try:
                    await self.services.messages.store_many([m for m, _, _ in batch])
                    break
                except Exception:
                    log.exception(
                        "storing %d messages failed: retrying in %.2f s", len(batch), delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(5.0, delay * 2)
            self.stored_batches += 1
            subscriber = self._subscriber
            if subscriber is not None:
                for _, packet_id, generation in batch:
                    if packet_id >= 0:
                        subscriber.queue_puback(packet_id, generation)
                subscriber.flush_pubacks()

    # twin ----------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _publish(self, topic: str, body: dict[str, Any]) -> None:
        if self._admin is not None:
            self._admin.client.publish(topic, json.dumps(body, separators=(",", ":")), qos=1)

    async def internal_message_broadcast(self, topic: str, data: bytes, qos: int = 1) -> None:
        """Publish as the platform (as amqtt's ``Broker.internal_message_broadcast``)."""
        if self._admin is not None:
            self._admin.client.publish(topic, data, qos=qos)

    def _on_desired_changed(self, device_id: str, patch: dict[str, Any]) -> None:
        self._publish(twin_topic(device_id, "desired"), patch)

    async def _twin_request(
        self, device_id: str, kind: TopicKind, payload: bytes, mid: int, qos: int, generation: int
    ) -> None:
        # one device's requests in arrival order (a reported patch, then a get)
        lock = self._twin_lock.setdefault(device_id, asyncio.Lock())
        async with lock:
            try:
                await self._answer_twin_request(device_id, kind, payload)
            except Exception:  # e.g. the database: unacknowledged, resent at reconnection
                log.exception("twin request from %s failed", device_id)
                return
            self._ack(mid, qos, generation)

    async def _answer_twin_request(self, device_id: str, kind: TopicKind, payload: bytes) -> None:
        """As the embedded broker answers (``TwinService.device_request``)."""
        reported = kind is TopicKind.TWIN_REPORTED
        answer = await self.services.twins.device_request(device_id, reported, payload)
        if answer is not None:
            self._publish(twin_topic(device_id, "res"), answer)


async def _exited(pid: int) -> None:
    """Returns when process ``pid`` (a child) has exited, woken by the kernel through a
    pidfd (Linux 5.3), without polling and without holding a thread."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def readable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)
