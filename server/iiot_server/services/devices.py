"""The device registry as admins and technicians read it."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, RowMapping, func, not_, select

from ..clock import Clock
from ..domain.errors import NotFound
from ..domain.tokens import TokenStatus
from ..domain.workspaces import DEFAULT_WORKSPACE, SEPARATOR, device_key, key_prefix, named_device
from ..store import statements
from ..store.database import Database, from_epoch, from_epoch_required, to_epoch
from ..store.schema import connection_events, devices, twin_property_states
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


@dataclass(frozen=True)
class ConnectionEvent:
    """One connect (``connected``) or disconnect the broker saw; ``takeover``: a second
    connection with the same Device ID pushed out the first (the device stays online)."""

    seq: int
    device_id: str
    at: datetime
    connected: bool
    takeover: bool


def in_workspace(key: ColumnElement[str], workspace_id: str) -> ColumnElement[bool]:
    """A device-key column's condition: the key is of a device of ``workspace_id``."""
    prefix = key_prefix(workspace_id)
    if prefix is None:
        return not_(key.contains(SEPARATOR, autoescape=True))
    return key.startswith(prefix, autoescape=True)


class DeviceService:
    """List, get and record connection state of devices."""

    def __init__(self, db: Database, clock: Clock, registration: RegistrationService) -> None:
        self._db = db
        self._clock = clock
        self._registration = registration

    async def list(
        self,
        workspace_id: str = DEFAULT_WORKSPACE,
        *,
        limit: int = 1000,
        after: str | None = None,
        convergence: str | None = None,
        desired_property: str | None = None,
    ) -> list[Device]:
        """The workspace's devices ordered by Device ID; page with ``after`` (the last
        Device ID seen). ``convergence`` (pending, converged, drifted): only devices with a
        desired property in that state (``desired_property``: that one)."""
        query = (
            select(devices)
            .where(in_workspace(devices.c.device_id, workspace_id))
            .order_by(devices.c.device_id)
            .limit(limit)
        )
        if convergence is not None or desired_property is not None:
            tps = twin_property_states.c
            having = select(tps.device_id)
            if convergence is not None:
                having = having.where(tps.state == convergence)
            if desired_property is not None:
                having = having.where(tps.property == desired_property)
            query = query.where(devices.c.device_id.in_(having))
        if after is not None:
            query = query.where(
                devices.c.device_id > device_key(workspace_id, after, field="after")
            )

        def rows(conn: Connection) -> list[tuple[RowMapping, RegistrationToken | None]]:
            return [
                (r._mapping, self._registration.current_token(conn, r._mapping["device_id"]))
                for r in conn.execute(query)
            ]

        return [self._device(m, token) for m, token in await self._db.scan(rows)]

    async def count(self) -> int:
        def count(conn: Connection) -> int:
            return int(conn.execute(select(func.count()).select_from(devices)).scalar_one())

        return await self._db.read(count)

    async def get(self, device_id: str) -> Device:
        def find(conn: Connection) -> tuple[RowMapping, RegistrationToken | None]:
            row = conn.execute(select(devices).where(devices.c.device_id == device_id)).first()
            if row is None:
                raise NotFound(f"no device {named_device(device_id)}", field="deviceId")
            return row._mapping, self._registration.current_token(conn, device_id)

        return self._device(*(await self._db.read(find)))

    async def record_connection(
        self, device_id: str, *, connected: bool, takeover: bool = False
    ) -> None:
        """Connection state as the broker saw it (a takeover is a second connection with the
        same Device ID pushing out the first)."""
        t = to_epoch(self._clock.now())
        if not connected:
            change = statements.DEVICE_DISCONNECTED
        else:
            change = statements.DEVICE_TAKEN_OVER if takeover else statements.DEVICE_CONNECTED
        event = {"b_device_id": device_id, "b_at": t, "b_connected": connected}

        def record(conn: Connection) -> None:
            changed = conn.execute(change, {"b_device_id": device_id, "b_at": t})
            if changed.rowcount:  # only provisioned devices have a connection history
                conn.execute(statements.INSERT_CONNECTION_EVENT, {**event, "b_takeover": takeover})

        await self._db.write(record)

    async def record_all_disconnected(self) -> builtins.list[str]:
        """Record every device the database still shows connected as disconnected now;
        returns their Device IDs (keys). Called as a broker starts: a broker that has
        just started has no connection, so any the database shows are left from a
        platform that ended without recording them (killed, or its mosquitto child
        crashed). Without this such a device stayed "connected" until it came back, and
        forever if it never did. One platform process runs one broker (docs/scaling.md);
        a clustered broker would scope this to its node."""
        t = to_epoch(self._clock.now())
        c = devices.c

        def record(conn: Connection) -> list[str]:
            stale = [r[0] for r in conn.execute(select(c.device_id).where(c.connected.is_(True)))]
            for device_id in stale:
                conn.execute(statements.DEVICE_DISCONNECTED, {"b_device_id": device_id, "b_at": t})
                conn.execute(
                    statements.INSERT_CONNECTION_EVENT,
                    {
                        "b_device_id": device_id,
                        "b_at": t,
                        "b_connected": False,
                        "b_takeover": False,
                    },
                )
            return stale

        return await self._db.write(record)

    async def connection_events(
        self, device_id: str, *, after: int = 0, limit: int = 1000
    ) -> builtins.list[ConnectionEvent]:
        """The device's connects and disconnects, oldest first; page with ``after`` (the
        last ``seq`` seen). Unknown device: :class:`NotFound`."""
        await self.get(device_id)
        c = connection_events.c
        query = (
            select(connection_events)
            .where(c.device_id == device_id, c.seq > after)
            .order_by(c.seq)
            .limit(limit)
        )

        def rows(conn: Connection) -> builtins.list[ConnectionEvent]:
            return [
                ConnectionEvent(
                    seq=int(m[c.seq]),
                    device_id=m[c.device_id],
                    at=from_epoch_required(m[c.at]),
                    connected=bool(m[c.connected]),
                    takeover=bool(m[c.takeover]),
                )
                for m in (r._mapping for r in conn.execute(query))
            ]

        return await self._db.scan(rows)

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
