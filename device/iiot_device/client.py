"""The device client: provisioning, durable messaging, token refresh and twin.

Threads: the caller's (``send_message`` and friends only touch the local database), one
supervisor thread (provisioning, registration, refresh, the MQTT connection, sending the
outbox, the twin), paho's network thread for the live connection, and a callback thread
so a slow ``on_desired_properties`` never holds up the network. Every timed wait of the
supervisor goes through the injected clock.
"""

from __future__ import annotations

import collections
import json
import logging
import random
import re
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from .api import DeviceApi, IssuedToken, Pending, ProvisioningOperation, Registration
from .backoff import Backoff
from .clock import Clock, SystemClock
from .errors import (
    ClientClosed,
    DeviceError,
    PlatformError,
    ProvisioningOperationCancelled,
    ProvisioningOperationExpired,
    ProvisioningTokenRefused,
    RegistrationTokenInvalid,
)
from .store import Durability, LocalStore, OutboxLimits, StoredMessage

log = logging.getLogger("iiot_device")

_STREAM = re.compile(r"^[0-9A-Za-z_.-]{1,64}$")
_MESSAGE_ID = re.compile(r"^[0-9A-Za-z_.:-]{1,128}$")
_CONNACK_WAIT = 10.0  # real seconds: a network event, not clock time
_IDLE_WAIT = 3600.0  # clock seconds between checks when nothing is scheduled


class Status(StrEnum):
    """What the client is doing (``client.status``)."""

    STARTING = "starting"
    AWAITING_APPROVAL = "awaiting_approval"
    REGISTERING = "registering"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    OFFLINE = "offline"
    """the platform or broker is unreachable; retrying with back-off"""
    PROVISIONING_TOKEN_REFUSED = "provisioning_token_refused"
    """the device cannot provision; messages are kept"""
    CLOSED = "closed"


@dataclass(frozen=True)
class DesiredProperties:
    properties: dict[str, Any]
    version: int


class _Stopped(Exception):
    pass


class _ConnectFailed(DeviceError):
    pass


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge-patch (a null removes a key); returns a new document.

    >>> merge_patch({"a": 1, "b": {"c": 2}}, {"a": None, "b": {"d": 3}})
    {'b': {'c': 2, 'd': 3}}
    """
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            result[key] = merge_patch(current if isinstance(current, dict) else {}, value)
        else:
            result[key] = value
    return result


def _log_operation(op: ProvisioningOperation) -> None:
    log.warning(
        "Provisioning: ask a technician to approve verification code %s (expires %s)",
        op.verification_code,
        op.expires_at.isoformat(),
    )


class DeviceClient:
    """A provisioned device's connection to the platform. Create with :meth:`start`."""

    def __init__(
        self,
        provisioning_token: str,
        db_path: str | Path,
        *,
        server_url: str,
        device_id: str | None = None,
        attributes: dict[str, str] | None = None,
        on_provisioning_operation: Callable[[ProvisioningOperation], None] | None = None,
        on_desired_properties: Callable[[DesiredProperties], None] | None = None,
        clock: Clock | None = None,
        outbox: OutboxLimits | None = None,
        durability: Durability | str = Durability.CRASH,
        compression: bool = False,
        max_inflight: int = 64,
        backoff: Backoff | None = None,
        provisioning_attempts: int = 3,
        keepalive: int = 60,
        http_timeout: float = 10.0,
        rng: random.Random | None = None,
        mqtt_address: tuple[str, int] | None = None,
    ) -> None:
        if not provisioning_token:
            raise ValueError("provisioning_token is required")
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1, got {max_inflight}")
        if provisioning_attempts < 1:
            raise ValueError(
                f"provisioning_attempts must be at least 1, got {provisioning_attempts}"
            )
        self._pt = provisioning_token
        self._requested_device_id = device_id
        self._attributes = attributes
        self._on_operation = on_provisioning_operation or _log_operation
        self._on_desired = on_desired_properties
        self._clock: Clock = clock or SystemClock()
        self._compression = compression
        self._max_inflight = max_inflight
        self._rng = rng or random.Random()
        self._backoff = backoff or Backoff(base=1.0, cap=300.0, rng=self._rng)
        self._attempts = provisioning_attempts
        self._keepalive = keepalive
        self._mqtt_address = mqtt_address
        """connect here instead of the broker named at registration (a gateway or proxy)"""
        self._store = LocalStore(db_path, limits=outbox, durability=durability)
        self._api = DeviceApi(server_url, timeout=http_timeout)

        self._stop = threading.Event()
        self._wake = threading.Event()
        self._sent = threading.Condition()
        self._status = Status.STARTING
        self.last_error: BaseException | None = None
        """The latest background failure (also logged); None after a clean start."""
        self.connection_attempts = 0
        """MQTT connection attempts so far (how hard this device knocks on the broker)."""

        rt = self._store.get("rt")
        self._rt: dict[str, Any] | None = rt
        self._registration: Registration | None = None
        desired = self._store.get("desired") or {"properties": {}, "version": 0}
        self._desired = DesiredProperties(desired["properties"], int(desired["version"]))

        # the live connection (supervisor thread only, except the event deques)
        self._mqtt: mqtt.Client | None = None
        self._generation = 0
        self._events: collections.deque[tuple[int, str, Any]] = collections.deque()
        self._inflight: dict[int, tuple[str, int]] = {}
        self._msg_cursor = 0
        self._rep_cursor = 0
        self._blocked_on_upload = False

        self._callbacks: collections.deque[DesiredProperties] = collections.deque()
        self._callback_wake = threading.Event()
        self._threads: list[threading.Thread] = []

    # construction ----------------------------------------------------------------

    @classmethod
    def start(cls, provisioning_token: str, db_path: str | Path, **options: Any) -> DeviceClient:
        """Open the device's database, provision if it holds no usable Registration Token
        (blocking until a technician approves), and start the background work.

        Options are those of the constructor (``server_url`` is required).
        """
        client = cls(provisioning_token, db_path, **options)
        try:
            if client._rt is None or client._rt_expired():
                client._provision()
            client._start_threads()
        except BaseException:
            client._shutdown()
            raise
        return client

    def _start_threads(self) -> None:
        name = f"iiot-device-{self.device_id}"
        self._threads.append(threading.Thread(target=self._run, name=name, daemon=True))
        if self._on_desired is not None:
            self._threads.append(
                threading.Thread(target=self._callback_loop, name=f"{name}-cb", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    # public state ----------------------------------------------------------------

    @property
    def device_id(self) -> str | None:
        return None if self._rt is None else str(self._rt["device_id"])

    @property
    def registration_token_expires_at(self) -> datetime | None:
        """When the current Registration Token expires (the device's clock); None if it
        never does or the device holds none."""
        rt = self._rt
        if rt is None or rt["lifetime"] is None:
            return None
        return datetime.fromtimestamp(rt["obtained_at"] + rt["lifetime"], UTC)

    @property
    def status(self) -> Status:
        return self._status

    @property
    def pending_messages_count(self) -> int:
        """Messages stored locally and not yet acknowledged by the platform."""
        return self._store.pending_messages

    @property
    def pending_reported_count(self) -> int:
        return self._store.pending_reported

    @property
    def messages_dropped(self) -> int:
        """Messages the outbox dropped to make room (policy ``drop_oldest``)."""
        return self._store.messages_dropped

    @property
    def desired_properties(self) -> DesiredProperties:
        return self._desired

    # the caller's API (never touches the network) ----------------------------------

    def send_message(
        self,
        payload: bytes | str,
        *,
        stream: str = "default",
        message_id: str | None = None,
        batch_id: str | None = None,
        batch_seq: int | None = None,
        last_in_batch: bool = False,
    ) -> None:
        """Store a message for sending; returns once it is durable locally.

        Raises :class:`OutboxFull` when the outbox is full and its policy refuses.
        """
        if self._stop.is_set():
            raise ClientClosed("the client is closed")
        if isinstance(payload, str):
            payload = payload.encode()
        elif not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"payload must be bytes or str, not {type(payload).__name__}")
        if not _STREAM.match(stream):
            raise ValueError(f"stream must be 1-64 characters of 0-9 a-z A-Z - _ ., got {stream!r}")
        if message_id is not None and not _MESSAGE_ID.match(message_id):
            raise ValueError(
                f"message_id must be 1-128 characters of 0-9 a-z A-Z - _ . :, got {message_id!r}"
            )
        props = None
        if batch_id is not None or batch_seq is not None or last_in_batch:
            extra: dict[str, str] = {}
            if batch_id is not None:
                if not _MESSAGE_ID.match(batch_id):
                    raise ValueError(f"batch_id must be like a message id, got {batch_id!r}")
                extra["batch"] = batch_id
            if batch_seq is not None:
                extra["seq"] = str(int(batch_seq))
            if last_in_batch:
                extra["last"] = "1"
            props = urlencode(extra)
        self._store.add_message(stream, bytes(payload), message_id, props)
        self._wake.set()

    def update_reported_properties(self, patch: dict[str, Any]) -> None:
        """Store a reported-properties merge patch; sent when possible, in order."""
        if self._stop.is_set():
            raise ClientClosed("the client is closed")
        if not isinstance(patch, dict):
            raise TypeError(f"patch must be a dict, not {type(patch).__name__}")
        try:
            json.dumps(patch)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"patch is not JSON-serialisable: {exc}") from exc
        self._store.add_reported(patch)
        self._wake.set()

    def wait_sent(self, timeout: float | None = None) -> bool:
        """Wait (real time: this waits on the network) until every stored message and
        reported patch was acknowledged; False on timeout."""
        with self._sent:
            return self._sent.wait_for(
                lambda: self._store.pending_messages == 0 and self._store.pending_reported == 0,
                timeout,
            )

    def close(self) -> None:
        """Stop the background work; anything not yet sent stays in the database."""
        self._stop.set()
        self._wake.set()
        self._callback_wake.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(30)
        self._shutdown()

    def _shutdown(self) -> None:
        self._stop.set()
        self._drop_connection()
        self._api.close()
        self._store.close()
        self._status = Status.CLOSED

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # waiting -----------------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        """Wait ``seconds`` of clock time, or less if woken; raises _Stopped on close."""
        if self._stop.is_set():
            raise _Stopped
        self._clock.wait(max(0.0, seconds), self._wake)
        self._wake.clear()
        if self._stop.is_set():
            raise _Stopped

    def _now(self) -> float:
        return self._clock.now().timestamp()

    # provisioning ------------------------------------------------------------------

    def _rt_expired(self) -> bool:
        rt = self._rt
        return (
            rt is not None
            and rt["lifetime"] is not None
            and (self._now() >= rt["obtained_at"] + rt["lifetime"])
        )

    def _provision(self) -> None:
        """Get a Registration Token through a Provisioning Operation (resuming a stored
        pending one), blocking until approved."""
        expired = 0
        while True:
            self._status = Status.AWAITING_APPROVAL
            op = self._resume_or_init()
            self._notify_operation(op)
            try:
                issued = self._poll(op)
            except ProvisioningOperationExpired:
                self._store.set("operation", None)
                expired += 1
                if expired >= self._attempts:
                    raise ProvisioningOperationExpired(
                        f"{expired} Provisioning Operation(s) expired without approval"
                    ) from None
                continue
            except ProvisioningOperationCancelled:
                self._store.set("operation", None)
                raise
            self._accept_token(issued, clear_operation=True)
            return

    def _notify_operation(self, op: ProvisioningOperation) -> None:
        try:
            self._on_operation(op)
        except Exception as exc:  # the device goes on waiting for approval
            log.exception("on_provisioning_operation failed")
            self.last_error = exc

    def _resume_or_init(self) -> ProvisioningOperation:
        stored = self._store.get("operation")
        if stored is not None:
            state = self._call(self._api.operation_state, self._pt, stored["id"])
            if state in ("pending", "approved", "completed"):
                return ProvisioningOperation(
                    stored["id"],
                    stored["code"],
                    datetime.fromisoformat(stored["expires_at"]),
                    float(stored["poll_interval"]),
                    stored.get("device_id"),
                )
            self._store.set("operation", None)
        op: ProvisioningOperation = self._call(
            self._api.init, self._pt, self._requested_device_id, self._attributes
        )
        self._store.set(
            "operation",
            {
                "id": op.id,
                "code": op.verification_code,
                "expires_at": op.expires_at.isoformat(),
                "poll_interval": op.poll_interval,
                "device_id": op.device_id,
            },
        )
        return op

    def _poll(self, op: ProvisioningOperation) -> IssuedToken:
        backoff = 1.0
        while True:
            result = self._call(self._api.complete, self._pt, op.id)
            if isinstance(result, IssuedToken):
                return result
            assert isinstance(result, Pending)
            # honour the server's interval; back off gently while nobody approves
            self._wait_or_stop(max(op.poll_interval, result.retry_after) * backoff)
            backoff = min(backoff * 1.25, 4.0)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """An HTTP call, retried with back-off while the platform is unreachable."""
        backoff = Backoff(base=1.0, cap=60.0, rng=self._rng)
        while True:
            try:
                return fn(*args)
            except httpx.TransportError as exc:
                failure: Exception = exc
            except PlatformError as exc:
                if exc.status != 429 and exc.status < 500:
                    raise
                failure = exc
            self.last_error = failure
            log.warning("platform unreachable (%s); retrying", failure)
            self._wait_or_stop(backoff.next())

    def _wait_or_stop(self, seconds: float) -> None:
        if self._stop.is_set():
            raise ClientClosed("the client is closed")
        self._clock.wait(seconds, self._stop)
        if self._stop.is_set():
            raise ClientClosed("the client is closed")

    def _accept_token(self, issued: IssuedToken, *, clear_operation: bool) -> None:
        rt = {
            "token": issued.registration_token,
            "lifetime": issued.lifetime,
            "obtained_at": self._now(),
            "device_id": issued.device_id,
        }
        values: dict[str, Any] = {"rt": rt}
        if clear_operation:
            values["operation"] = None
        if self._rt is not None and self._rt["device_id"] != issued.device_id:
            values["desired"] = None  # another identity: its twin is not ours
            self._desired = DesiredProperties({}, 0)
        self._store.set_many(values)
        self._rt = rt
        self._registration = None

    def _refresh_due(self) -> bool:
        rt = self._rt
        return (
            rt is not None
            and rt["lifetime"] is not None
            and (self._now() >= rt["obtained_at"] + rt["lifetime"] / 2)
        )

    def _next_deadline(self) -> float:
        rt = self._rt
        if rt is None or rt["lifetime"] is None:
            return _IDLE_WAIT
        refresh_at = float(rt["obtained_at"] + rt["lifetime"] / 2)
        return min(_IDLE_WAIT, max(0.0, refresh_at - self._now()))

    # the supervisor ----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except (_Stopped, ClientClosed):
                break
            except RegistrationTokenInvalid as exc:
                self._fail(exc, "registration token no longer valid: provisioning again")
                self._drop_connection()
                self._rt = None
                self._registration = None
                self._store.set("rt", None)
            except ProvisioningTokenRefused as exc:
                self._status = Status.PROVISIONING_TOKEN_REFUSED
                self._fail(exc, "provisioning token refused; messages are kept")
                self._backoff_wait()
            except (
                ProvisioningOperationCancelled,
                ProvisioningOperationExpired,
                httpx.TransportError,
                OSError,
                PlatformError,
                _ConnectFailed,
            ) as exc:
                if self._status is not Status.PROVISIONING_TOKEN_REFUSED:
                    self._status = Status.OFFLINE
                self._fail(exc, "retrying")
                self._drop_connection()
                self._backoff_wait()
            except Exception as exc:  # never die silently
                log.exception("device client: unexpected error")
                self.last_error = exc
                self._drop_connection()
                self._backoff_wait()
        self._status = Status.CLOSED

    def _fail(self, exc: BaseException, what: str) -> None:
        repeated = repr(exc) == repr(self.last_error)
        self.last_error = exc
        # the first of a run of identical failures is a warning; the retries are not
        log.log(
            logging.DEBUG if repeated else logging.WARNING,
            "device %s: %s (%s)",
            self.device_id,
            exc,
            what,
        )

    def _backoff_wait(self) -> None:
        """Wait out the back-off delay: only closing cuts it short (new messages do not,
        or an offline device that keeps sending would retry without pause)."""
        self._clock.wait(self._backoff.next(), self._stop)
        self._wake.clear()

    def _step(self) -> None:
        if self._rt is None or self._rt_expired():
            self._drop_connection()
            if self._rt is not None:
                raise RegistrationTokenInvalid("the Registration Token expired")
            self._provision()
            return
        if self._refresh_due():
            self._refresh()
            return
        if self._registration is None:
            self._status = Status.REGISTERING
            self._registration = self._api.register(self._rt["token"])
            return
        if self._mqtt is None:
            self._status = Status.CONNECTING
            self._connect(self._registration)
            self._status = Status.CONNECTED
            self._backoff.reset()
            self.last_error = None
            return
        self._wake.clear()
        self._handle_events()
        if self._mqtt is None:  # lost the connection
            self._status = Status.OFFLINE
            self._backoff_wait()
            return
        self._pump()
        self._wait(self._next_deadline())

    def _refresh(self) -> None:
        assert self._rt is not None
        issued = self._api.refresh(self._pt, self._rt["token"])
        log.info("device %s refreshed its Registration Token", issued.device_id)
        self._accept_token(issued, clear_operation=False)
        self._drop_connection()  # reconnect with the new token's MQTT password

    # MQTT --------------------------------------------------------------------------

    def _connect(self, reg: Registration) -> None:
        self.connection_attempts += 1
        self._generation += 1
        gen = self._generation
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=reg.device_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
            reconnect_on_failure=False,
        )
        client.username_pw_set(reg.mqtt_username, reg.mqtt_password)
        client.max_inflight_messages_set(self._max_inflight)
        client.max_queued_messages_set(0)
        answered = threading.Event()
        outcome: list[Any] = []

        def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            outcome.append(rc)
            answered.set()

        subscribed = threading.Event()

        def on_disconnect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            answered.set()
            subscribed.set()  # nothing more will come on this connection
            self._events.append((gen, "disconnect", rc))
            self._wake.set()

        def on_publish(_c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
            self._events.append((gen, "ack", mid))
            self._wake.set()

        def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
            self._events.append((gen, "message", (msg.topic, msg.payload)))
            self._wake.set()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_message = on_message
        host, port = self._mqtt_address or (reg.mqtt_host, reg.mqtt_port)
        client.connect(host, port, keepalive=self._keepalive)
        client.loop_start()
        if not answered.wait(_CONNACK_WAIT) or not outcome or outcome[0].is_failure:
            client.disconnect()
            client.loop_stop()
            reason = outcome[0] if outcome else "no answer"
            if outcome and outcome[0].value in (4, 5, 134, 135):  # bad credentials
                self._registration = None  # register again (the token may have moved on)
            raise _ConnectFailed(f"MQTT connection refused: {reason}")
        self._mqtt = client
        self._inflight.clear()
        self._msg_cursor = 0
        self._rep_cursor = 0
        self._blocked_on_upload = False
        base = f"devices/{reg.device_id}/twin"
        client.on_subscribe = lambda *_: subscribed.set()
        client.subscribe(f"{base}/+", 1)
        # only once the subscription is in place is no desired patch missed: anything
        # before it is in the answer to the twin request that follows
        if not subscribed.wait(_CONNACK_WAIT) or not client.is_connected():
            self._drop_connection()
            raise _ConnectFailed("MQTT subscription to the twin topics not acknowledged")
        client.publish(f"{base}/get", b"{}", qos=1)  # the full twin after every (re)connect

    def _drop_connection(self) -> None:
        client, self._mqtt = self._mqtt, None
        self._generation += 1
        self._inflight.clear()
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def _handle_events(self) -> None:
        acked_messages: list[int] = []
        acked_reported: list[int] = []
        while self._events:
            gen, kind, value = self._events.popleft()
            if gen != self._generation:
                continue  # from a connection already dropped
            if kind == "ack":
                entry = self._inflight.pop(value, None)
                if entry is not None:
                    (acked_messages if entry[0] == "m" else acked_reported).append(entry[1])
            elif kind == "message":
                self._on_twin(*value)
            elif kind == "disconnect":
                log.info("device %s disconnected: %s", self.device_id, value)
                self._drop_connection()
        if acked_messages or acked_reported:
            self._store.delete_messages(acked_messages)
            self._store.delete_reported(acked_reported)
            with self._sent:
                self._sent.notify_all()

    def _pump(self) -> None:
        client, reg = self._mqtt, self._registration
        if client is None or reg is None:
            return
        base = f"devices/{reg.device_id}"
        room = self._max_inflight - len(self._inflight)
        if room > 0:
            for seq, patch in self._store.next_reported(self._rep_cursor, room):
                info = client.publish(f"{base}/twin/reported", patch, qos=1)
                self._inflight[info.mid] = ("r", seq)
                self._rep_cursor = seq
            room = self._max_inflight - len(self._inflight)
        while room > 0 and self._mqtt is not None:
            batch = self._store.next_messages(self._msg_cursor, room)
            if not batch:
                return
            for message in batch:
                payload, props = self._encode(message)
                if len(payload) > reg.max_mqtt_message_size:
                    if any(kind == "m" for kind, _ in self._inflight.values()):
                        return  # keep order: upload once what precedes it is acknowledged
                    self._upload(message)
                    self._msg_cursor = message.seq
                    continue
                topic = f"{base}/messages/{message.stream}/{props}"
                info = client.publish(topic, payload, qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    return  # the disconnect event follows
                self._inflight[info.mid] = ("m", message.seq)
                self._msg_cursor = message.seq
            room = self._max_inflight - len(self._inflight)

    def _encode(self, message: StoredMessage) -> tuple[bytes, str]:
        props = {"mid": message.message_id}
        payload = message.payload
        if self._compression and len(payload) > 64:
            packed = zlib.compress(payload)
            if len(packed) < len(payload):
                payload, props["ce"] = packed, "zlib"
        query = urlencode(props)
        if message.props:
            query = f"{query}&{message.props}"
        return payload, query

    def _upload(self, message: StoredMessage) -> None:
        assert self._rt is not None
        self._api.upload(self._rt["token"], message.stream, message.message_id, message.payload)
        self._store.delete_messages([message.seq])
        with self._sent:
            self._sent.notify_all()

    # twin --------------------------------------------------------------------------

    def _on_twin(self, topic: str, payload: bytes) -> None:
        suffix = topic.rsplit("/", 1)[-1]
        try:
            body = json.loads(payload or b"{}")
        except ValueError:
            log.warning("unreadable twin message on %s", topic)
            return
        if not isinstance(body, dict):
            return
        if suffix == "res":
            if "error" in body:
                error = body["error"] or {}
                self.last_error = PlatformError(
                    400, "/problems/validation", error.get("detail"), error.get("field")
                )
                log.warning("platform refused a twin update: %s", self.last_error)
                return
            desired = body.get("desired")
            if not isinstance(desired, dict):
                return
            version = int(desired.pop("$version", 0))
            if version < self._desired.version:
                return  # answered before a patch that already arrived: stale
            if "since" in body:
                if body["since"] != self._desired.version:
                    self._request_twin()
                    return
                properties = merge_patch(self._desired.properties, desired)
            else:
                properties = desired
            self._set_desired(DesiredProperties(properties, version))
        elif suffix == "desired":
            version = int(body.pop("$version", 0))
            current = self._desired.version
            if version <= current:
                return  # already applied
            if version != current + 1:
                log.info("desired version gap (%d -> %d): fetching the twin", current, version)
                self._request_twin(since=current)
                return
            self._set_desired(
                DesiredProperties(merge_patch(self._desired.properties, body), version)
            )

    def _request_twin(self, since: int | None = None) -> None:
        client, reg = self._mqtt, self._registration
        if client is None or reg is None:
            return
        body = {} if since is None else {"since": since}
        client.publish(f"devices/{reg.device_id}/twin/get", json.dumps(body), qos=1)

    def _set_desired(self, desired: DesiredProperties) -> None:
        changed = desired != self._desired
        self._store.set("desired", {"properties": desired.properties, "version": desired.version})
        self._desired = desired
        if changed and self._on_desired is not None:
            self._callbacks.append(desired)
            self._callback_wake.set()

    def _callback_loop(self) -> None:
        assert self._on_desired is not None
        while True:
            self._callback_wake.wait()
            self._callback_wake.clear()
            while self._callbacks:
                desired = self._callbacks.popleft()
                try:
                    self._on_desired(desired)
                except Exception as exc:
                    log.exception("on_desired_properties failed")
                    self.last_error = exc
            if self._stop.is_set():
                return


__all__ = ["DesiredProperties", "DeviceClient", "Status", "merge_patch"]
