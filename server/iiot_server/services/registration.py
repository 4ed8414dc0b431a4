"""Registration Tokens: issue at completion, register, refresh, revoke; and the MQTT
connection credentials that registration hands out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import RowMapping, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..clock import Clock
from ..domain.errors import (
    Forbidden,
    NotFound,
    RegistrationTokenExpired,
    RegistrationTokenRevoked,
    Unauthorized,
)
from ..domain.tokens import (
    DEFAULT_REFRESH_FRACTION,
    TokenStatus,
    expires_at,
    refresh_due_at,
    registration_token_status,
    usable_until,
)
from ..events import PlatformEvents, RegistrationEnded
from ..security import SecretKind, has_kind, hash_secret, new_id, new_secret
from ..settings import Settings
from ..store.database import from_epoch, from_epoch_required, to_epoch
from ..store.schema import devices, mqtt_credentials, registration_tokens

FIELD = "registrationToken"


@dataclass(frozen=True)
class RegistrationToken:
    """A stored Registration Token (never with its secret)."""

    id: str
    device_id: str
    provisioning_token_id: str
    provisioning_operation_id: str
    parent_id: str | None
    issued_at: datetime
    lifetime: float | None
    expires_at: datetime | None
    superseded_at: datetime | None
    revoked_at: datetime | None

    def status(self, now: datetime, grace_period: float) -> TokenStatus:
        return registration_token_status(
            now,
            expires_at=self.expires_at,
            revoked_at=self.revoked_at,
            superseded_at=self.superseded_at,
            grace_period=grace_period,
        )

    def usable_until(self, grace_period: float) -> datetime | None:
        return usable_until(
            expires_at=self.expires_at,
            revoked_at=self.revoked_at,
            superseded_at=self.superseded_at,
            grace_period=grace_period,
        )


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued Registration Token, secret included (shown once)."""

    secret: str
    token: RegistrationToken
    replaced_earlier: bool = False


@dataclass(frozen=True)
class Registration:
    """What a registering device needs to connect."""

    device_id: str
    workspace_id: str
    mqtt_host: str
    mqtt_port: int
    mqtt_username: str
    mqtt_password: str
    expires_at: datetime | None
    remaining_lifetime: float | None
    refresh_after: float | None
    max_mqtt_message_size: int


@dataclass(frozen=True)
class MqttIdentity:
    """Who an MQTT connection is, and until when its credentials hold."""

    device_id: str
    registration_token_id: str
    expires_at: datetime | None


class RegistrationService:
    """Issue, check, refresh and revoke Registration Tokens."""

    def __init__(
        self, engine: AsyncEngine, clock: Clock, settings: Settings, events: PlatformEvents
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._settings = settings
        self._events = events

    @property
    def grace_period(self) -> float:
        return self._settings.refresh_grace_period

    async def issue_for_operation(
        self,
        conn: AsyncConnection,
        *,
        device_id: str,
        provisioning_token_id: str,
        operation_id: str,
        lifetime: float | None,
        now: datetime,
    ) -> IssuedToken:
        """Issue a device's first (or replacement) token; every earlier token of that
        Device ID stops working at once. Runs in the caller's transaction."""
        t = to_epoch(now)
        revoked = await conn.execute(
            update(registration_tokens)
            .where(
                registration_tokens.c.device_id == device_id,
                registration_tokens.c.revoked_at.is_(None),
            )
            .values(revoked_at=t)
        )
        existing = (
            await conn.execute(select(devices.c.device_id).where(devices.c.device_id == device_id))
        ).first()
        if existing is None:
            await conn.execute(
                insert(devices).values(
                    device_id=device_id,
                    provisioning_token_id=provisioning_token_id,
                    provisioning_operation_id=operation_id,
                    created_at=t,
                    provisioned_at=t,
                    connected=False,
                    connection_takeovers=0,
                )
            )
        else:
            await conn.execute(
                update(devices)
                .where(devices.c.device_id == device_id)
                .values(
                    provisioning_token_id=provisioning_token_id,
                    provisioning_operation_id=operation_id,
                    provisioned_at=t,
                )
            )
        issued = await self._insert_token(
            conn,
            device_id=device_id,
            provisioning_token_id=provisioning_token_id,
            operation_id=operation_id,
            parent_id=None,
            lifetime=lifetime,
            now=now,
        )
        return IssuedToken(issued.secret, issued.token, replaced_earlier=revoked.rowcount > 0)

    def announce_reprovisioned(self, issued: IssuedToken) -> None:
        """Tell the broker that sessions on the earlier tokens must end."""
        if issued.replaced_earlier:
            self._events.publish(
                "registration_ended", issued.token.device_id, RegistrationEnded.REPROVISIONED
            )

    async def _insert_token(
        self,
        conn: AsyncConnection,
        *,
        device_id: str,
        provisioning_token_id: str,
        operation_id: str,
        parent_id: str | None,
        lifetime: float | None,
        now: datetime,
    ) -> IssuedToken:
        secret = new_secret(SecretKind.REGISTRATION_TOKEN)
        token = RegistrationToken(
            id=new_id(),
            device_id=device_id,
            provisioning_token_id=provisioning_token_id,
            provisioning_operation_id=operation_id,
            parent_id=parent_id,
            issued_at=now,
            lifetime=lifetime,
            expires_at=expires_at(now, lifetime),
            superseded_at=None,
            revoked_at=None,
        )
        await conn.execute(
            insert(registration_tokens).values(
                id=token.id,
                device_id=device_id,
                provisioning_token_id=provisioning_token_id,
                provisioning_operation_id=operation_id,
                parent_id=parent_id,
                secret_hash=hash_secret(secret),
                issued_at=to_epoch(now),
                lifetime=lifetime,
                expires_at=token.expires_at and to_epoch(token.expires_at),
            )
        )
        return IssuedToken(secret, token)

    async def _find(self, conn: AsyncConnection, secret: str) -> RegistrationToken | None:
        if not has_kind(secret, SecretKind.REGISTRATION_TOKEN):
            return None
        row = (
            await conn.execute(
                select(registration_tokens).where(
                    registration_tokens.c.secret_hash == hash_secret(secret)
                )
            )
        ).first()
        return None if row is None else _rt(row._mapping)

    def _require_usable(self, token: RegistrationToken | None, now: datetime) -> RegistrationToken:
        if token is None:
            raise Unauthorized("unknown Registration Token", field=FIELD)
        status = token.status(now, self.grace_period)
        if status is TokenStatus.EXPIRED:
            raise RegistrationTokenExpired("the Registration Token has expired", field=FIELD)
        if status is TokenStatus.REVOKED:
            raise RegistrationTokenRevoked("the Registration Token was revoked", field=FIELD)
        if status is TokenStatus.SUPERSEDED:
            raise RegistrationTokenRevoked(
                "the Registration Token was replaced by a refresh", field=FIELD
            )
        return token

    async def authenticate(self, secret: str) -> RegistrationToken:
        """The usable token behind ``secret``, or an error saying why not."""
        async with self._engine.connect() as conn:
            token = await self._find(conn, secret)
        return self._require_usable(token, self._clock.now())

    async def register(self, secret: str) -> Registration:
        """MQTT connection details for a device holding a usable token. The password is
        new for each registration and bound to this token: it dies with it."""
        now = self._clock.now()
        password = new_secret(SecretKind.MQTT_PASSWORD)
        async with self._engine.begin() as conn:
            token = self._require_usable(await self._find(conn, secret), now)
            await conn.execute(
                insert(mqtt_credentials).values(
                    id=new_id(),
                    device_id=token.device_id,
                    registration_token_id=token.id,
                    secret_hash=hash_secret(password),
                    issued_at=to_epoch(now),
                )
            )
            await conn.execute(
                update(devices)
                .where(devices.c.device_id == token.device_id)
                .values(registered_at=to_epoch(now))
            )
        remaining = refresh_after = None
        if token.expires_at is not None:
            remaining = max(0.0, (token.expires_at - now).total_seconds())
            due = refresh_due_at(token.issued_at, token.expires_at, DEFAULT_REFRESH_FRACTION)
            assert due is not None
            refresh_after = max(0.0, (due - now).total_seconds())
        s = self._settings
        return Registration(
            device_id=token.device_id,
            workspace_id=s.workspace_id,
            mqtt_host=s.mqtt_host,
            mqtt_port=s.mqtt_port,
            mqtt_username=token.device_id,
            mqtt_password=password,
            expires_at=token.expires_at,
            remaining_lifetime=remaining,
            refresh_after=refresh_after,
            max_mqtt_message_size=s.max_mqtt_message_size,
        )

    async def refresh(self, provisioning_token_id: str, secret: str) -> IssuedToken:
        """A new token replacing ``secret``'s. The replaced (parent) token keeps working for
        the grace period; its own parent, and any earlier replacement of it whose response
        was lost, stop working at once."""
        now = self._clock.now()
        t = to_epoch(now)
        async with self._engine.begin() as conn:
            found = await self._find(conn, secret)
            if found is None:
                raise Forbidden("unknown Registration Token", field=FIELD)
            token = self._require_usable(found, now)
            if token.provisioning_token_id != provisioning_token_id:
                raise Forbidden(
                    "this Registration Token was not issued under this Provisioning Token",
                    field=FIELD,
                )
            c = registration_tokens.c
            if token.superseded_at is None:
                await conn.execute(
                    update(registration_tokens).where(c.id == token.id).values(superseded_at=t)
                )
            else:  # a retry after a lost response: the earlier child was never received
                await conn.execute(
                    update(registration_tokens)
                    .where(c.parent_id == token.id, c.revoked_at.is_(None))
                    .values(revoked_at=t)
                )
            if token.parent_id is not None:
                await conn.execute(
                    update(registration_tokens)
                    .where(c.id == token.parent_id, c.revoked_at.is_(None))
                    .values(revoked_at=t)
                )
            return await self._insert_token(
                conn,
                device_id=token.device_id,
                provisioning_token_id=token.provisioning_token_id,
                operation_id=token.provisioning_operation_id,
                parent_id=token.id,
                lifetime=token.lifetime,
                now=now,
            )

    async def revoke_device(self, device_id: str) -> int:
        """Revoke every token of the device at once; returns how many were live."""
        async with self._engine.begin() as conn:
            await _require_device(conn, device_id)
            result = await conn.execute(
                update(registration_tokens)
                .where(
                    registration_tokens.c.device_id == device_id,
                    registration_tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=to_epoch(self._clock.now()))
            )
        self._events.publish("registration_ended", device_id, RegistrationEnded.REVOKED)
        return result.rowcount

    async def delete_device(self, device_id: str) -> None:
        """Forget a device: its tokens stop working and its record is removed."""
        async with self._engine.begin() as conn:
            await _require_device(conn, device_id)
            await conn.execute(
                update(registration_tokens)
                .where(
                    registration_tokens.c.device_id == device_id,
                    registration_tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=to_epoch(self._clock.now()))
            )
            await conn.execute(
                delete(mqtt_credentials).where(mqtt_credentials.c.device_id == device_id)
            )
            await conn.execute(delete(devices).where(devices.c.device_id == device_id))
        self._events.publish("registration_ended", device_id, RegistrationEnded.DELETED)

    async def current_token(
        self, conn: AsyncConnection, device_id: str
    ) -> RegistrationToken | None:
        """The device's newest token that is not revoked (it may have expired)."""
        row = (
            await conn.execute(
                select(registration_tokens)
                .where(
                    registration_tokens.c.device_id == device_id,
                    registration_tokens.c.revoked_at.is_(None),
                )
                .order_by(registration_tokens.c.issued_at.desc())
                .limit(1)
            )
        ).first()
        return None if row is None else _rt(row._mapping)

    async def authenticate_mqtt(
        self, client_id: str | None, username: str | None, password: str | None
    ) -> MqttIdentity | None:
        """The device an MQTT CONNECT proves to be, or None. Client id, username and the
        Device ID behind the password must all agree, and the bound token must be usable."""
        if not client_id or not username or not password or client_id != username:
            return None
        if not has_kind(password, SecretKind.MQTT_PASSWORD):
            return None
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(registration_tokens)
                    .join(
                        mqtt_credentials,
                        mqtt_credentials.c.registration_token_id == registration_tokens.c.id,
                    )
                    .where(mqtt_credentials.c.secret_hash == hash_secret(password))
                )
            ).first()
        if row is None:
            return None
        token = _rt(row._mapping)
        if (
            token.device_id != client_id
            or not token.status(self._clock.now(), self.grace_period).usable
        ):
            return None
        return MqttIdentity(token.device_id, token.id, token.usable_until(self.grace_period))


async def _require_device(conn: AsyncConnection, device_id: str) -> None:
    row = (
        await conn.execute(select(devices.c.device_id).where(devices.c.device_id == device_id))
    ).first()
    if row is None:
        raise NotFound(f"no device {device_id!r}", field="deviceId")


def _rt(m: RowMapping) -> RegistrationToken:
    c = registration_tokens.c
    return RegistrationToken(
        id=m[c.id],
        device_id=m[c.device_id],
        provisioning_token_id=m[c.provisioning_token_id],
        provisioning_operation_id=m[c.provisioning_operation_id],
        parent_id=m[c.parent_id],
        issued_at=from_epoch_required(m[c.issued_at]),
        lifetime=m[c.lifetime],
        expires_at=from_epoch(m[c.expires_at]),
        superseded_at=from_epoch(m[c.superseded_at]),
        revoked_at=from_epoch(m[c.revoked_at]),
    )


__all__ = ["IssuedToken", "MqttIdentity", "Registration", "RegistrationService"]
