"""The device registry as admins and technicians read it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import RowMapping, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ..clock import Clock
from ..domain.errors import NotFound
from ..domain.tokens import TokenStatus
from ..store.database import from_epoch, from_epoch_required, to_epoch
from ..store.schema import devices
from .registration import RegistrationService, RegistrationToken


@dataclass(frozen=True)
class Device:
    """A provisioned device, its current token and its connection state."""

    device_id: str
    provisioning_token_id: str
    provisioning_operation_id: str
    created_at: datetime
    provisioned_at: datetime
    registered_at: datetime | None
    registration_token_status: TokenStatus | None
    registration_token_expires_at: datetime | None
    connected: bool
    last_connected_at: datetime | None
    last_disconnected_at: datetime | None
    connection_takeovers: int
    last_takeover_at: datetime | None


class DeviceService:
    """List, get and record connection state of devices."""

    def __init__(
        self, engine: AsyncEngine, clock: Clock, registration: RegistrationService
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._registration = registration

    async def list(self, *, limit: int = 1000, after: str | None = None) -> list[Device]:
        """Devices ordered by Device ID; page with ``after`` (the last ID seen)."""
        query = select(devices).order_by(devices.c.device_id).limit(limit)
        if after is not None:
            query = query.where(devices.c.device_id > after)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            result = []
            for row in rows:
                token = await self._registration.current_token(conn, row._mapping["device_id"])
                result.append(self._device(row._mapping, token))
        return result

    async def count(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(devices))).scalar_one())

    async def get(self, device_id: str) -> Device:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(devices).where(devices.c.device_id == device_id))
            ).first()
            if row is None:
                raise NotFound(f"no device {device_id!r}", field="deviceId")
            token = await self._registration.current_token(conn, device_id)
        return self._device(row._mapping, token)

    async def record_connection(
        self, device_id: str, *, connected: bool, takeover: bool = False
    ) -> None:
        """Connection state as the broker saw it (a takeover is a second connection with the
        same Device ID pushing out the first)."""
        t = to_epoch(self._clock.now())
        values: dict[str, object] = {"connected": connected}
        values["last_connected_at" if connected else "last_disconnected_at"] = t
        if takeover:
            values["connection_takeovers"] = devices.c.connection_takeovers + 1
            values["last_takeover_at"] = t
        async with self._engine.begin() as conn:
            await conn.execute(
                update(devices).where(devices.c.device_id == device_id).values(**values)
            )

    def _device(self, m: RowMapping, token: RegistrationToken | None) -> Device:
        c = devices.c
        return Device(
            device_id=m[c.device_id],
            provisioning_token_id=m[c.provisioning_token_id],
            provisioning_operation_id=m[c.provisioning_operation_id],
            created_at=from_epoch_required(m[c.created_at]),
            provisioned_at=from_epoch_required(m[c.provisioned_at]),
            registered_at=from_epoch(m[c.registered_at]),
            registration_token_status=(
                token.status(self._clock.now(), self._registration.grace_period) if token else None
            ),
            registration_token_expires_at=token.expires_at if token else None,
            connected=bool(m[c.connected]),
            last_connected_at=from_epoch(m[c.last_connected_at]),
            last_disconnected_at=from_epoch(m[c.last_disconnected_at]),
            connection_takeovers=int(m[c.connection_takeovers] or 0),
            last_takeover_at=from_epoch(m[c.last_takeover_at]),
        )
