"""Cloud-to-device messages: what the platform sends one device, as IoT Hub does.

A message is stored first, then sent over MQTT (QoS 1) whenever the device has a session
subscribed to its ``…/messages/devicebound/#`` topic, and is done only when the device
acknowledges it (PUBACK): at least once, like IoT Hub over MQTT (a device may see a
message twice if its PUBACK is lost; the ``$.mid`` property lets it tell). A message the
device never takes before its time to live expires is kept, marked expired, and never
sent. IoT Hub's limits are taken as they are: 50 messages waiting per device, 64 KiB per
message, a time to live of 1 hour by default and 2 days at most.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    bindparam,
    func,
    insert,
    select,
    update,
)

from ..clock import Clock
from ..domain.errors import NotFound, TooManyRequests, ValidationError
from ..domain.workspaces import named_device
from ..events import PlatformEvents
from ..store.database import Database, from_epoch, from_epoch_required, to_epoch
from ..store.schema import cloud_to_device_messages as c2d
from ..store.schema import devices

MAX_PENDING_PER_DEVICE = 50
"""Messages waiting for one device (IoT Hub's per-device queue depth)."""
MAX_PAYLOAD = 64 * 1024
"""Bytes of one message's payload (IoT Hub's limit)."""
DEFAULT_TIME_TO_LIVE = timedelta(hours=1)
MAX_TIME_TO_LIVE = timedelta(days=2)
MAX_PROPERTIES = 32
_PROPERTY_NAME_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
)


class DeliveryState(StrEnum):
    PENDING = "pending"
    """Stored, not yet acknowledged by the device."""
    DELIVERED = "delivered"
    """The device acknowledged it (MQTT PUBACK)."""
    EXPIRED = "expired"
    """Its time to live ran out before the device took it: never sent again."""


@dataclass(frozen=True)
class CloudToDeviceMessage:
    seq: int
    """Order of sending (per platform; paging key of the listing)."""
    message_id: str
    device_id: str
    payload: bytes
    properties: dict[str, str]
    created_at: datetime
    expires_at: datetime
    delivered_at: datetime | None
    state: DeliveryState


def validate_properties(properties: dict[str, str]) -> dict[str, str]:
    """Application properties travel in the topic's property bag: names are plain ASCII
    words (no ``$``: system properties are the platform's), values any text.

    >>> validate_properties({"command": "reboot"})
    {'command': 'reboot'}
    >>> validate_properties({"$.mid": "x"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    iiot_server.domain.errors.ValidationError: property names are 1-64 characters ... '$.mid')...
    """
    if len(properties) > MAX_PROPERTIES:
        raise ValidationError(f"at most {MAX_PROPERTIES} properties", field="properties")
    for name, value in properties.items():
        if not 0 < len(name) <= 64 or not set(name) <= _PROPERTY_NAME_CHARS:
            raise ValidationError(
                f"property names are 1-64 characters of 0-9 a-z A-Z - _ . (got {name!r})",
                field="properties",
            )
        if len(value) > 1024:
            raise ValidationError(f"property {name!r} is over 1024 characters", field="properties")
    return properties


class CloudToDeviceService:
    """Queue, list and settle cloud-to-device messages; a queued one is announced as the
    ``cloud_to_device_queued`` event ``(device_id)`` for the broker to send."""

    def __init__(self, db: Database, clock: Clock, events: PlatformEvents) -> None:
        self._db = db
        self._clock = clock
        self._events = events

    async def send(
        self,
        device_id: str,
        payload: bytes,
        properties: dict[str, str] | None = None,
        time_to_live: timedelta = DEFAULT_TIME_TO_LIVE,
    ) -> CloudToDeviceMessage:
        """Store a message for ``device_id`` (404 for an unknown device, 429 with its queue
        full) and announce it."""
        if len(payload) > MAX_PAYLOAD:
            raise ValidationError(f"payload is over {MAX_PAYLOAD} bytes", field="payload")
        if not timedelta(seconds=1) <= time_to_live <= MAX_TIME_TO_LIVE:
            raise ValidationError(
                f"time to live must be 1 s to {MAX_TIME_TO_LIVE.total_seconds():.0f} s",
                field="timeToLiveSeconds",
            )
        props = validate_properties(dict(properties or {}))
        now = self._clock.now()
        t = to_epoch(now)
        row = {
            "id": str(uuid.uuid4()),
            "device_id": device_id,
            "payload": payload,
            "properties": props,
            "created_at": t,
            "expires_at": to_epoch(now + time_to_live),
            "delivered_at": None,
        }

        def write(conn: Connection) -> int:
            known = conn.execute(
                select(devices.c.device_id).where(devices.c.device_id == device_id)
            )
            if known.first() is None:
                raise NotFound(f"device {named_device(device_id)} not found", field="deviceId")
            waiting = conn.execute(
                select(func.count()).select_from(c2d).where(*_pending(device_id, t))
            ).scalar_one()
            if waiting >= MAX_PENDING_PER_DEVICE:
                raise TooManyRequests(
                    f"{waiting} messages already wait for device {device_id!r}"
                    f" (at most {MAX_PENDING_PER_DEVICE})",
                    retry_after=60,
                    field="deviceId",
                )
            inserted = conn.execute(insert(c2d).values(row).returning(c2d.c.seq))
            return int(inserted.scalar_one())

        row["seq"] = await self._db.write(write)
        self._events.publish("cloud_to_device_queued", device_id)
        return _message(row, t)

    async def pending(
        self, device_id: str, limit: int = MAX_PENDING_PER_DEVICE
    ) -> list[CloudToDeviceMessage]:
        """Messages still to send to the device, oldest first (expired ones left out)."""
        t = to_epoch(self._clock.now())

        def read(conn: Connection) -> list[CloudToDeviceMessage]:
            if limit == MAX_PENDING_PER_DEVICE:  # every CONNECT asks: a statement built once
                rows = conn.execute(_PENDING, {"b_device_id": device_id, "b_now": t})
            else:
                rows = conn.execute(
                    select(c2d).where(*_pending(device_id, t)).order_by(c2d.c.seq).limit(limit)
                )
            return [_message(row, t) for row in rows.mappings()]

        return await self._db.read(read)

    async def delivered(self, message_id: str) -> None:
        """The device acknowledged ``message_id``."""
        t = to_epoch(self._clock.now())

        def write(conn: Connection) -> None:
            conn.execute(
                update(c2d)
                .where(c2d.c.id == message_id, c2d.c.delivered_at.is_(None))
                .values(delivered_at=t)
            )

        await self._db.write(write)

    async def list(
        self, device_id: str, *, after: int = 0, limit: int = 100
    ) -> list[CloudToDeviceMessage]:
        """Every message sent to the device with its state, oldest first; page with
        ``after`` (the last ``seq`` seen)."""
        t = to_epoch(self._clock.now())

        def read(conn: Connection) -> list[CloudToDeviceMessage]:
            known = conn.execute(
                select(devices.c.device_id).where(devices.c.device_id == device_id)
            )
            if known.first() is None:
                raise NotFound(f"device {named_device(device_id)} not found", field="deviceId")
            query = (
                select(c2d)
                .where(c2d.c.device_id == device_id, c2d.c.seq > after)
                .order_by(c2d.c.seq)
                .limit(limit)
            )
            return [_message(row, t) for row in conn.execute(query).mappings()]

        return await self._db.read(read)


def _pending(device_id: str, t: float) -> tuple[ColumnElement[bool], ...]:
    return (c2d.c.device_id == device_id, c2d.c.delivered_at.is_(None), c2d.c.expires_at > t)


_PENDING = (
    select(c2d)
    .where(
        c2d.c.device_id == bindparam("b_device_id"),
        c2d.c.delivered_at.is_(None),
        c2d.c.expires_at > bindparam("b_now"),
    )
    .order_by(c2d.c.seq)
    .limit(MAX_PENDING_PER_DEVICE)
)
"""What :meth:`CloudToDeviceService.pending` reads on every CONNECT, built once: building a
statement and its cache key costs more than SQLite takes to run it
(``store/statements.py``)."""


def _message(row: RowMapping | dict[str, object], now: float) -> CloudToDeviceMessage:
    delivered_at = row["delivered_at"]
    expires_at = float(row["expires_at"])  # type: ignore[arg-type]
    if delivered_at is not None:
        state = DeliveryState.DELIVERED
    elif expires_at <= now:
        state = DeliveryState.EXPIRED
    else:
        state = DeliveryState.PENDING
    return CloudToDeviceMessage(
        seq=int(row["seq"]),  # type: ignore[arg-type]
        message_id=str(row["id"]),
        device_id=str(row["device_id"]),
        payload=bytes(row["payload"]),  # type: ignore[arg-type]
        properties=dict(row["properties"]),  # type: ignore[arg-type]
        created_at=from_epoch_required(float(row["created_at"])),  # type: ignore[arg-type]
        expires_at=from_epoch_required(expires_at),
        delivered_at=from_epoch(delivered_at),  # type: ignore[arg-type]
        state=state,
    )
