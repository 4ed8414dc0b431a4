"""The device client: provisioning, durable messaging, token refresh and twin.

Threads: the caller's (``send_message`` and friends only touch the local database), one
supervisor thread (provisioning, registration, refresh, the MQTT connection, sending the
outbox, the twin), the process's one network thread for every device's live connection
(:mod:`iiot_device.network`: paho on ``epoll``, not a thread per connection in
``select()``, which cannot take a descriptor above 1,023), and a callback thread
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
from enum import Enum, IntEnum, StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qsl, urlencode

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, ConnackCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .api import DeviceApi, IssuedToken, Pending, ProvisioningOperation, Registration
from .backoff import Backoff
from .clock import Clock, SystemClock, WakeEvent
from .errors import (
    BrokerConnectionFailed,
    ClientClosed,
    PlatformError,
    ProvisioningOperationCancelled,
    ProvisioningOperationExpired,
    ProvisioningTokenRefused,
    RegistrationTokenInvalid,
)
from .network import shared_loop
from .store import TOKEN_KEY, Durability, LocalStore, OutboxLimits, StoredMessage, TokenState

log = logging.getLogger("iiot_device")

_STREAM = re.compile(r"^[0-9A-Za-z_.-]{1,64}$")
_MESSAGE_ID = re.compile(r"^[0-9A-Za-z_.:-]{1,128}$")
_CONNACK_WAIT = 10.0  # real seconds: a network event, not clock time
_IDLE_WAIT = 3600.0  # clock seconds between checks when nothing is scheduled

_P = ParamSpec("_P")
_T = TypeVar("_T")


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


@dataclass(frozen=True)
class CloudToDeviceMessage:
    """A message the platform sent this device (IoT Hub's cloud-to-device message)."""

    message_id: str
    """``$.mid``: the same message sent again (its acknowledgement lost) has the same id,
    and the client takes it once."""
    properties: dict[str, str]
    """The application properties (the ``$.`` system ones left out)."""
    payload: bytes


CLOUD_TO_DEVICE_LEVEL = "/messages/devicebound/"


def parse_cloud_to_device(topic: str, payload: bytes) -> CloudToDeviceMessage | None:
    """The message a ``devices/{id}/messages/devicebound/{bag}`` PUBLISH carries, or None
    for another topic.

    >>> parse_cloud_to_device("devices/p1/messages/devicebound/%24.mid=m1&%24.to=x&op=go", b"1")
    CloudToDeviceMessage(message_id='m1', properties={'op': 'go'}, payload=b'1')
    """
    _, found, bag = topic.partition(CLOUD_TO_DEVICE_LEVEL)
    if not found or not topic.startswith("devices/"):
        return None
    properties = dict(parse_qsl(bag, keep_blank_values=True))
    message_id = properties.pop("$.mid", "") or f"no-id:{zlib.crc32(topic.encode() + payload)}"
    application = {k: v for k, v in properties.items() if not k.startswith("$.")}
    return CloudToDeviceMessage(message_id, application, bytes(payload))


class _Stopped(Exception):
    """Control flow, not an error: the client is closing (the supervisor loop ends)."""


class ConnackReason(IntEnum):
    """The CONNACK reason codes the client tells apart (MQTT 5 numbering).

    paho 2 reports an MQTT 3.1.1 return code as its MQTT 5 equivalent (3.1.1's 4, bad
    user name or password, arrives as 134); the 3.1.1 numbers are paho's ``ConnackCode``.
    """

    SUCCESS = 0
    BAD_USER_NAME_OR_PASSWORD = 134
    NOT_AUTHORIZED = 135


_CREDENTIALS_REFUSED: frozenset[int] = frozenset(
    {
        ConnackCode.CONNACK_REFUSED_BAD_USERNAME_PASSWORD,
        ConnackCode.CONNACK_REFUSED_NOT_AUTHORIZED,
        ConnackReason.BAD_USER_NAME_OR_PASSWORD,
        ConnackReason.NOT_AUTHORIZED,
    }
)


def credentials_refused(reason: ReasonCode) -> bool:
    """Did the broker refuse the MQTT credentials (so the device registers again: the
    token may have moved on), rather than fail for another reason?

    >>> from paho.mqtt.client import convert_connack_rc_to_reason_code as from_v311
    >>> credentials_refused(from_v311(ConnackCode.CONNACK_REFUSED_NOT_AUTHORIZED))
    True
    >>> credentials_refused(from_v311(ConnackCode.CONNACK_REFUSED_SERVER_UNAVAILABLE))
    False
    """
    return reason.value in _CREDENTIALS_REFUSED


# what paho's network thread hands the supervisor (one deque; tagged by connection, so
# events of a connection already dropped are ignored)


@dataclass(frozen=True, slots=True)
class _Acknowledged:
    """PUBACK for the publish with this paho message id."""

    generation: int
    mid: int


@dataclass(frozen=True, slots=True)
class _Received:
    """A message on a subscribed (twin) topic."""

    generation: int
    topic: str
    payload: bytes | bytearray
    """as paho has it (its type says either)"""


@dataclass(frozen=True, slots=True)
class _Disconnected:
    generation: int
    reason: ReasonCode


_ConnectionEvent = _Acknowledged | _Received | _Disconnected


class _Outbound(Enum):
    """What an in-flight publish carries, so its PUBACK deletes the right row."""

    MESSAGE = "message"
    """an outbox message"""
    REPORTED = "reported"
    """a reported-properties patch"""


@dataclass(frozen=True, slots=True)
class _InFlight:
    kind: _Outbound
    seq: int
    """the row's sequence number in its table"""


class _MqttClient(mqtt.Client):
    """paho's client, finding its proxy once per device and host instead of at every
    ``connect``.

    With PySocks installed, paho looks for a proxy at each connect (the ``mqtt_proxy``
    environment variable unless ``no_proxy`` covers the host, then PySocks' default):
    urllib reads the whole environment twice, ~220 of the ~260 us of CPU a refused
    connect costs (70 variables; the rest is paho's client and the socket). A device
    behind a cut network makes one such attempt per back-off delay (a hybrid run's 1,000
    devices ~50 a minute); it keeps paho's answer in ``proxies`` (one dict per
    :class:`DeviceClient`, shared by its successive paho clients), as httpx reads its
    proxy variables once per client. The environment is read when the device first
    connects to a host, not again until it restarts."""

    def __init__(self, *args: Any, proxies: dict[str, dict[str, Any] | None], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._iiot_proxies = proxies

    def _get_proxy(self) -> dict[str, Any] | None:
        host = self._host
        if host not in self._iiot_proxies:
            self._iiot_proxies[host] = super()._get_proxy()
        return self._iiot_proxies[host]


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
        ca_cert: str | Path | None = None,
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
        self._mqtt_proxies: dict[str, dict[str, Any] | None] = {}
        """the proxy paho chose for each MQTT host, None: none (:class:`_MqttClient`)"""
        self._store = LocalStore(db_path, limits=outbox, durability=durability)
        self._ca_cert = None if ca_cert is None else str(ca_cert)
        """PEM CA file trusted over HTTPS and MQTT over TLS; None: the system store"""
        self._api = DeviceApi(server_url, timeout=http_timeout, ca_cert=ca_cert)

        self._stop = WakeEvent()
        self._wake = WakeEvent()
        self._network_up = WakeEvent()
        """set by :meth:`network_available` (and by closing): cuts a back-off wait short"""
        self._sent = threading.Condition()
        self._status = Status.STARTING
        self.last_error: BaseException | None = None
        """The latest background failure (also logged); None after a clean start."""
        self.connection_attempts = 0
        """MQTT connection attempts so far (how hard this device knocks on the broker)."""

        self._rt: TokenState | None = self._store.registration_token()
        self._registration: Registration | None = None
        desired = self._store.get("desired") or {"properties": {}, "version": 0}
        self._desired = DesiredProperties(desired["properties"], int(desired["version"]))

        # the live connection (supervisor thread only, except the event deques)
        self._mqtt: mqtt.Client | None = None
        self._generation = 0
        self._events: collections.deque[_ConnectionEvent] = collections.deque()
        self._inbox_ready = threading.Condition()
        self._inflight: dict[int, _InFlight] = {}
        """paho message id -> what the publish carries"""
        self._msg_cursor = 0
        self._rep_cursor = 0
        self._blocked_on_upload = False

        self._callbacks: collections.deque[DesiredProperties] = collections.deque()
        self._callback_wake = WakeEvent()
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
        return None if self._rt is None else self._rt.device_id

    @property
    def registration_token_expires_at(self) -> datetime | None:
        """When the current Registration Token expires (the device's clock); None if it
        never does or the device holds none."""
        expires_at = None if self._rt is None else self._rt.expires_at
        return None if expires_at is None else datetime.fromtimestamp(expires_at, UTC)

    @property
    def status(self) -> Status:
        return self._status

    @property
    def pending_messages_count(self) -> int:
        """Messages stored locally and not yet acknowledged by the platform."""
        return self._store.pending_messages

    def receive_cloud_to_device(self, timeout: float | None = 0) -> CloudToDeviceMessage | None:
        """The oldest cloud-to-device message not yet taken, or None if none arrives within
        ``timeout`` seconds (real time; None: wait for one). The client keeps each message in
        its database before acknowledging it to the platform, so one taken here survives a
        crash before it was taken; each is taken once."""
        with self._inbox_ready:
            taken = self._store.take_inbox()
            if taken is None and timeout != 0:
                self._inbox_ready.wait_for(lambda: self._store.pending_inbox > 0, timeout)
                taken = self._store.take_inbox()
        return None if taken is None else CloudToDeviceMessage(*taken)

    @property
    def pending_cloud_to_device_count(self) -> int:
        """Cloud-to-device messages received and not yet taken."""
        return self._store.pending_inbox

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

    def network_available(self) -> None:
        """Tell the device its network came back (the modem attached, the link came up:
        what an operating system's connectivity callback reports): a reconnect or HTTP
        retry waiting out its back-off delay is made now instead. The back-off sequence is
        not reset (if the platform itself is down, the fleet still spreads its retries).
        Connected, it does nothing: a signal is dropped once the device finds itself
        connected."""
        self._network_up.set()

    def close(self) -> None:
        """Stop the background work; anything not yet sent stays in the database."""
        self._stop.set()
        self._wake.set()
        self._network_up.set()
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
        expires_at = None if self._rt is None else self._rt.expires_at
        return expires_at is not None and self._now() >= expires_at

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
        op = self._call(self._api.init, self._pt, self._requested_device_id, self._attributes)
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

    def _call(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """An HTTP call, retried with back-off while the platform is unreachable."""
        backoff = Backoff(base=1.0, cap=60.0, rng=self._rng)
        while True:
            try:
                return fn(*args, **kwargs)
            except httpx.TransportError as exc:
                failure: Exception = exc
            except PlatformError as exc:
                if exc.status != 429 and exc.status < 500:
                    raise
                failure = exc
            self.last_error = failure
            log.warning("platform unreachable (%s); retrying", failure)
            self._wait_or_stop(backoff.next(), self._network_up)
            self._network_up.clear()

    def _wait_or_stop(self, seconds: float, event: threading.Event | None = None) -> None:
        """Wait ``seconds`` of clock time, or until ``event`` (one that closing also sets;
        by default the stop itself); raises ClientClosed on close."""
        if self._stop.is_set():
            raise ClientClosed("the client is closed")
        self._clock.wait(seconds, self._stop if event is None else event)
        if self._stop.is_set():
            raise ClientClosed("the client is closed")

    def _accept_token(self, issued: IssuedToken, *, clear_operation: bool) -> None:
        rt = TokenState(issued.registration_token, issued.lifetime, self._now(), issued.device_id)
        values: dict[str, Any] = {TOKEN_KEY: rt.to_json()}
        if clear_operation:
            values["operation"] = None
        if self._rt is not None and self._rt.device_id != issued.device_id:
            values["desired"] = None  # another identity: its twin is not ours
            self._desired = DesiredProperties({}, 0)
        self._store.set_many(values)
        self._rt = rt
        self._registration = None

    def _refresh_due(self) -> bool:
        refresh_at = None if self._rt is None else self._rt.refresh_at
        return refresh_at is not None and self._now() >= refresh_at

    def _next_deadline(self) -> float:
        refresh_at = None if self._rt is None else self._rt.refresh_at
        if refresh_at is None:
            return _IDLE_WAIT
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
                self._store.set(TOKEN_KEY, None)
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
                BrokerConnectionFailed,
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
        """Wait out the back-off delay: only closing and :meth:`network_available` cut it
        short (new messages do not, or an offline device that keeps sending would retry
        without pause)."""
        self._clock.wait(self._backoff.next(), self._network_up)
        self._network_up.clear()
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
            self._registration = self._api.register(self._rt.token)
            return
        if self._mqtt is None:
            self._status = Status.CONNECTING
            self._connect(self._registration)
            self._status = Status.CONNECTED
            self._backoff.reset()
            self.last_error = None
            return
        self._wake.clear()
        self._network_up.clear()  # connected: nothing to retry
        self._handle_events()
        if self._mqtt is None:  # lost the connection
            self._status = Status.OFFLINE
            self._backoff_wait()
            return
        self._pump()
        self._wait(self._next_deadline())

    def _refresh(self) -> None:
        assert self._rt is not None
        issued = self._api.refresh(self._pt, self._rt.token)
        log.info("device %s refreshed its Registration Token", issued.device_id)
        self._accept_token(issued, clear_operation=False)
        self._drop_connection()  # reconnect with the new token's MQTT password

    # MQTT --------------------------------------------------------------------------

    def _connect(self, reg: Registration) -> None:
        self.connection_attempts += 1
        self._generation += 1
        gen = self._generation
        client = _MqttClient(
            CallbackAPIVersion.VERSION2,
            proxies=self._mqtt_proxies,
            client_id=reg.device_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
            reconnect_on_failure=False,
        )
        client.username_pw_set(reg.mqtt_username, reg.mqtt_password)
        if reg.mqtt_tls:  # the server's certificate checked against ca_cert (or the system's)
            client.tls_set(ca_certs=self._ca_cert)
        client.max_inflight_messages_set(self._max_inflight)
        client.max_queued_messages_set(0)
        answered = threading.Event()
        outcome: list[ReasonCode] = []

        # paho 2 callbacks (CallbackAPIVersion.VERSION2), run on paho's network thread
        def on_connect(
            _client: mqtt.Client,
            _userdata: object,
            _flags: mqtt.ConnectFlags,
            reason: ReasonCode,
            _properties: Properties | None,
        ) -> None:
            outcome.append(reason)
            answered.set()

        subscribed = threading.Event()

        def on_disconnect(
            _client: mqtt.Client,
            _userdata: object,
            _flags: mqtt.DisconnectFlags,
            reason: ReasonCode,
            _properties: Properties | None,
        ) -> None:
            answered.set()
            subscribed.set()  # nothing more will come on this connection
            self._events.append(_Disconnected(gen, reason))
            self._wake.set()

        def on_publish(
            _client: mqtt.Client,
            _userdata: object,
            mid: int,
            _reason: ReasonCode,
            _properties: Properties,
        ) -> None:
            self._events.append(_Acknowledged(gen, mid))
            self._wake.set()

        def on_message(_client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
            c2d = parse_cloud_to_device(msg.topic, bytes(msg.payload))
            if c2d is not None:  # stored before paho's PUBACK, which follows this return
                with self._inbox_ready:
                    self._store.add_inbox(c2d.message_id, c2d.properties, c2d.payload)
                    self._inbox_ready.notify_all()
                return
            self._events.append(_Received(gen, msg.topic, msg.payload))
            self._wake.set()

        def on_subscribe(
            _client: mqtt.Client,
            _userdata: object,
            _mid: int,
            _reasons: list[ReasonCode],
            _properties: Properties | None,
        ) -> None:
            subscribed.set()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_message = on_message
        host, port = self._mqtt_address or (reg.mqtt_host, reg.mqtt_port)
        network = shared_loop()
        network.attach(client)
        client.connect(host, port, keepalive=self._keepalive)
        if not answered.wait(_CONNACK_WAIT) or not outcome or outcome[0].is_failure:
            network.disconnect(client)
            if outcome and credentials_refused(outcome[0]):
                self._registration = None  # register again (the token may have moved on)
            reason = outcome[0] if outcome else "no answer"
            raise BrokerConnectionFailed(f"MQTT connection refused: {reason}")
        self._mqtt = client
        self._inflight.clear()
        self._msg_cursor = 0
        self._rep_cursor = 0
        self._blocked_on_upload = False
        base = f"devices/{reg.device_id}/twin"
        client.on_subscribe = on_subscribe
        client.subscribe([(f"{base}/+", 1), (f"devices/{reg.device_id}/messages/devicebound/#", 1)])
        # only once the subscription is in place is no desired patch missed: anything
        # before it is in the answer to the twin request that follows
        if not subscribed.wait(_CONNACK_WAIT) or not client.is_connected():
            self._drop_connection()
            raise BrokerConnectionFailed("MQTT subscription to the twin topics not acknowledged")
        client.publish(f"{base}/get", b"{}", qos=1)  # the full twin after every (re)connect

    def _drop_connection(self) -> None:
        client, self._mqtt = self._mqtt, None
        self._generation += 1
        self._inflight.clear()
        if client is not None:
            shared_loop().disconnect(client)

    def _handle_events(self) -> None:
        acked_messages: list[int] = []
        acked_reported: list[int] = []
        while self._events:
            event = self._events.popleft()
            if event.generation != self._generation:
                continue  # from a connection already dropped
            match event:
                case _Acknowledged(mid=mid):
                    entry = self._inflight.pop(mid, None)
                    if entry is None:
                        pass
                    elif entry.kind is _Outbound.MESSAGE:
                        acked_messages.append(entry.seq)
                    else:
                        acked_reported.append(entry.seq)
                case _Received(topic=topic, payload=payload):
                    self._on_twin(topic, payload)
                case _Disconnected(reason=reason):
                    log.info("device %s disconnected: %s", self.device_id, reason)
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
                self._inflight[info.mid] = _InFlight(_Outbound.REPORTED, seq)
                self._rep_cursor = seq
            room = self._max_inflight - len(self._inflight)
        while room > 0 and self._mqtt is not None:
            batch = self._store.next_messages(self._msg_cursor, room)
            if not batch:
                return
            for message in batch:
                payload, props = self._encode(message)
                if len(payload) > reg.max_mqtt_message_size:
                    if any(i.kind is _Outbound.MESSAGE for i in self._inflight.values()):
                        return  # keep order: upload once what precedes it is acknowledged
                    self._upload(message)
                    self._msg_cursor = message.seq
                    continue
                topic = f"{base}/messages/{message.stream}/{props}"
                info = client.publish(topic, payload, qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    return  # the disconnect event follows
                self._inflight[info.mid] = _InFlight(_Outbound.MESSAGE, message.seq)
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
        self._api.upload(self._rt.token, message.stream, message.message_id, message.payload)
        self._store.delete_messages([message.seq])
        with self._sent:
            self._sent.notify_all()

    # twin --------------------------------------------------------------------------

    def _on_twin(self, topic: str, payload: bytes | bytearray) -> None:
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
