"""Registration Tokens: issue at completion, register, refresh, revoke; and the MQTT
connection credentials that registration hands out."""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, RowMapping, delete, select

from ..clock import Clock
from ..domain import sas
from ..domain.errors import (
    Forbidden,
    NotFound,
    RegistrationTokenExpired,
    RegistrationTokenRevoked,
    RegistrationTokenUnknown,
)
from ..domain.leaks import PresentedToken
from ..domain.operations import CLOSED_BY_DEVICE_END, CancelReason
from ..domain.tokens import (
    DEFAULT_REFRESH_FRACTION,
    TokenStatus,
    expires_at,
    refresh_due_at,
    registration_token_status,
    usable_until,
)
from ..domain.workspaces import device_key, named_device, split_device_key
from ..events import PlatformEvents, RegistrationEnded
from ..security import SecretKind, has_kind, hash_secret, new_id, new_secret
from ..settings import Settings
from ..signing_key import KEY_BYTES, decode_signing_key
from ..store import statements as sql
from ..store.database import Database, from_epoch, from_epoch_required, to_epoch
from ..store.schema import cloud_to_device_messages as c2d
from ..store.schema import (
    desired_patches,
    devices,
    mqtt_credentials,
    registration_tokens,
    twins,
)
from .audit import record_audit
from .limits import DeviceApiLimits

FIELD = "registrationToken"

log = logging.getLogger(__name__)


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
    mqtt_client_id: str
    """The device key (``domain/workspaces.py``): MQTT client id, username, topics' id."""
    mqtt_host: str
    mqtt_port: int
    mqtt_tls: bool
    mqtt_username: str
    mqtt_password: str
    expires_at: datetime | None
    remaining_lifetime: float | None
    refresh_after: float | None
    max_mqtt_message_size: int
    connection_string: str
    """Spotflow's: ``HostName=…;DeviceId=<workspace>:<device>;SharedAccessSignature=…``"""
    connection_string_expires_at: datetime
    """When the SAS in it expires: with the RT, or a day from now for an infinite RT."""


@dataclass(frozen=True)
class MqttIdentity:
    """Who an MQTT connection is, and until when its credentials hold."""

    device_id: str
    registration_token_id: str
    expires_at: datetime | None


MqttPasswordHook = Callable[[str, str, str, datetime | None], Awaitable[None]]
"""``(device_id, registration_token_id, mqtt_password, usable_until)``"""

RefusedTokenHook = Callable[[str, str], Awaitable[object]]
"""``(secret, use)``: a Registration Token refused as superseded or revoked, for leak
detection (``services/alerts.py``); ``use``: ``device_api`` (a Registration Token route: register,
upload), ``register`` or ``refresh``."""


class RegistrationService:
    """Issue, check, refresh and revoke Registration Tokens."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings,
        events: PlatformEvents,
        limits: DeviceApiLimits | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings
        self._events = events
        self._limits = limits or DeviceApiLimits(settings, clock)
        self.on_mqtt_password: MqttPasswordHook | None = None
        """Awaited at register with each new MQTT password, before register answers: an
        external broker (Mosquitto) learns it there (``broker/mosquitto_broker.py``)."""
        self.on_token_refused: RefusedTokenHook | None = None
        """Awaited when a presented token is refused as superseded or revoked, before the
        refusal is answered (leak detection's rule (b), ``services/alerts.py``)."""
        self._signing_key = (
            secrets.token_bytes(KEY_BYTES)
            if settings.sas_signing_key is None
            else decode_signing_key(settings.sas_signing_key)
        )

    def sas_key(self, registration_token_id: str) -> bytes:
        """The key a SAS issued for this Registration Token is signed with (derived from
        the platform's signing key; never stored)."""
        return sas.device_key(self._signing_key, registration_token_id)

    @property
    def grace_period(self) -> float:
        return self._settings.refresh_grace_period

    def issue_for_operation(
        self,
        conn: Connection,
        *,
        device_id: str,
        provisioning_token_id: str,
        operation_id: str,
        lifetime: float | None,
        now: datetime,
    ) -> IssuedToken:
        """Issue a device's first (or replacement) token; every earlier token of that
        Device ID stops working at once. Runs in the caller's unit of work."""
        t = to_epoch(now)
        revoked = conn.execute(sql.REVOKE_DEVICE_TOKENS, {"b_device_id": device_id, "b_now": t})
        if conn.execute(sql.DEVICE_EXISTS, {"b_device_id": device_id}).first() is None:
            conn.execute(
                sql.INSERT_DEVICE,
                {
                    "device_id": device_id,
                    "provisioning_token_id": provisioning_token_id,
                    "provisioning_operation_id": operation_id,
                    "created_at": t,
                    "provisioned_at": t,
                    "connected": False,
                    "connection_takeovers": 0,
                },
            )
        else:
            conn.execute(
                sql.UPDATE_DEVICE,
                {
                    "b_device_id": device_id,
                    "provisioning_token_id": provisioning_token_id,
                    "provisioning_operation_id": operation_id,
                    "provisioned_at": t,
                },
            )
        issued = self._insert_token(
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

    def _insert_token(
        self,
        conn: Connection,
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
        conn.execute(
            sql.INSERT_REGISTRATION_TOKEN,
            {
                "id": token.id,
                "device_id": device_id,
                "provisioning_token_id": provisioning_token_id,
                "provisioning_operation_id": operation_id,
                "parent_id": parent_id,
                "secret_hash": hash_secret(secret),
                "issued_at": to_epoch(now),
                "lifetime": lifetime,
                "expires_at": token.expires_at and to_epoch(token.expires_at),
            },
        )
        return IssuedToken(secret, token)

    @staticmethod
    def _find(conn: Connection, secret: str, *, lock: bool = False) -> RegistrationToken | None:
        if not has_kind(secret, SecretKind.REGISTRATION_TOKEN):
            return None
        query = sql.LOCK_REGISTRATION_TOKEN if lock else sql.FIND_REGISTRATION_TOKEN
        row = conn.execute(query, {"b_hash": hash_secret(secret)}).first()
        return None if row is None else _rt(row._mapping)

    def _require_usable(self, token: RegistrationToken | None, now: datetime) -> RegistrationToken:
        if token is None:
            raise RegistrationTokenUnknown("unknown Registration Token", field=FIELD)
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
        """The usable token behind ``secret``, or an error saying why not; each call
        counts towards its Device ID's request rate (``services.limits``)."""
        token = await self._db.read(self._find, secret)
        try:
            usable = self._require_usable(token, self._clock.now())
        except RegistrationTokenRevoked:
            await self._report_refused(secret, "device_api")
            raise
        self._limits.device_request(f"device:{usable.device_id}")
        return usable

    async def register(self, secret: str) -> Registration:
        """MQTT connection details for a device holding a usable token. The password is
        new for each registration and bound to this token: it dies with it. It replaces
        the token's earlier password (refused at CONNECT from now on): one live credential
        per token, so a device retrying register piles nothing up, and one that lost its
        password registers again. A session already open on the earlier password is not
        cut; a new CONNECT with the same Device ID takes it over."""
        now = self._clock.now()
        password = new_secret(SecretKind.MQTT_PASSWORD)

        def register_device(conn: Connection) -> RegistrationToken:
            token = self._require_usable(self._find(conn, secret), now)
            conn.execute(sql.DELETE_MQTT_CREDENTIALS_OF_TOKEN, {"b_token_id": token.id})
            conn.execute(
                sql.INSERT_MQTT_CREDENTIAL,
                {
                    "id": new_id(),
                    "device_id": token.device_id,
                    "registration_token_id": token.id,
                    "secret_hash": hash_secret(password),
                    "issued_at": to_epoch(now),
                },
            )
            conn.execute(
                sql.DEVICE_REGISTERED, {"b_device_id": token.device_id, "b_now": to_epoch(now)}
            )
            _audit_device(
                conn, "device.registered", token.device_id, {"registrationTokenId": token.id}, now
            )
            return token

        try:
            token = await self._db.write(register_device)
        except RegistrationTokenRevoked:
            await self._report_refused(secret, "register")
            raise
        if self.on_mqtt_password is not None:
            until = token.usable_until(self.grace_period)
            await self.on_mqtt_password(token.device_id, token.id, password, until)
        remaining = refresh_after = None
        if token.expires_at is not None:
            remaining = max(0.0, (token.expires_at - now).total_seconds())
            due = refresh_due_at(token.issued_at, token.expires_at, DEFAULT_REFRESH_FRACTION)
            assert due is not None
            refresh_after = max(0.0, (due - now).total_seconds())
        s = self._settings
        # the SAS expires with the RT (whole seconds, rounded down: never after it)
        sas_expiry = int(to_epoch(token.expires_at or now + sas.INFINITE_TOKEN_SAS_LIFETIME))
        workspace_id, device_id = split_device_key(token.device_id)
        hub_device_id = sas.iot_hub_device_id(workspace_id, device_id)
        signature = sas.sign(
            sas.resource_uri(s.mqtt_host, hub_device_id), self.sas_key(token.id), sas_expiry
        )
        return Registration(
            device_id=device_id,
            workspace_id=workspace_id,
            mqtt_client_id=token.device_id,
            mqtt_host=s.mqtt_host,
            mqtt_port=s.mqtt_port,
            mqtt_tls=s.tls,
            mqtt_username=token.device_id,
            mqtt_password=password,
            expires_at=token.expires_at,
            remaining_lifetime=remaining,
            refresh_after=refresh_after,
            max_mqtt_message_size=s.max_mqtt_message_size,
            connection_string=sas.connection_string(s.mqtt_host, hub_device_id, signature),
            connection_string_expires_at=from_epoch_required(sas_expiry),
        )

    async def refresh(self, provisioning_token_id: str, secret: str) -> IssuedToken:
        """A new token replacing ``secret``'s. The replaced (parent) token keeps working for
        the grace period; its own parent, and any earlier replacement of it whose response
        was lost, stop working at once."""
        now = self._clock.now()
        self._limits.device_request(f"refresh:{hash_secret(secret)}", field=FIELD)
        try:
            issued, parent = await self._db.write(self._refresh, provisioning_token_id, secret, now)
        except RegistrationTokenRevoked:
            await self._report_refused(secret, "refresh")
            raise
        until = parent.usable_until(self.grace_period)
        if until is not None:  # sessions on the parent's MQTT password end with its grace
            self._events.publish("registration_superseded", parent.device_id, parent.id, until)
        return issued

    async def _report_refused(self, secret: str, use: str) -> None:
        if self.on_token_refused is None:
            return
        try:
            await self.on_token_refused(secret, use)
        except Exception:  # leak detection never changes the answer the device gets
            log.exception("leak detection on a refused Registration Token failed")

    async def describe_presented(self, secret: str) -> PresentedToken | None:
        """What leak detection's rule (b) needs to know of a refused token: whether a
        refresh replaced it (superseded, or revoked because its parent was refreshed
        again) and whether its device still lives on another token. None: unknown."""

        def describe(conn: Connection) -> PresentedToken | None:
            token = self._find(conn, secret)
            if token is None:
                return None
            c = registration_tokens.c
            replaced_by_retry = False
            if token.revoked_at is not None and token.parent_id is not None:
                # REVOKE_CHILD_TOKENS: a sibling issued at the instant this one was revoked
                sibling = conn.execute(
                    select(c.id).where(
                        c.parent_id == token.parent_id,
                        c.id != token.id,
                        c.issued_at == to_epoch(token.revoked_at),
                    )
                ).first()
                replaced_by_retry = sibling is not None
            other = conn.execute(  # a token of the device not revoked, besides this one
                select(c.id).where(
                    c.device_id == token.device_id, c.revoked_at.is_(None), c.id != token.id
                )
            ).first()
            return PresentedToken(
                registration_token_id=token.id,
                device_id=token.device_id,
                parent_id=token.parent_id,
                superseded_at=token.superseded_at,
                revoked_at=token.revoked_at,
                replaced_by_retry=replaced_by_retry,
                device_live=other is not None,
            )

        return await self._db.read(describe)

    def _refresh(
        self, conn: Connection, provisioning_token_id: str, secret: str, now: datetime
    ) -> tuple[IssuedToken, RegistrationToken]:
        t = to_epoch(now)
        found = self._find(conn, secret, lock=True)
        if found is None:
            raise RegistrationTokenUnknown("unknown Registration Token", field=FIELD)
        token = self._require_usable(found, now)
        if token.provisioning_token_id != provisioning_token_id:
            raise Forbidden(
                "this Registration Token was not issued under this Provisioning Token",
                field=FIELD,
            )
        if token.superseded_at is None:
            conn.execute(sql.SUPERSEDE_REGISTRATION_TOKEN, {"b_id": token.id, "b_now": t})
        else:  # a retry after a lost response: the earlier child was never received
            conn.execute(sql.REVOKE_CHILD_TOKENS, {"b_id": token.id, "b_now": t})
        if token.parent_id is not None:
            conn.execute(sql.REVOKE_REGISTRATION_TOKEN, {"b_id": token.parent_id, "b_now": t})
        issued = self._insert_token(
            conn,
            device_id=token.device_id,
            provisioning_token_id=token.provisioning_token_id,
            operation_id=token.provisioning_operation_id,
            parent_id=token.id,
            lifetime=token.lifetime,
            now=now,
        )
        _audit_device(
            conn,
            "token.refreshed",
            token.device_id,
            {"registrationTokenId": issued.token.id, "parentId": token.id},
            now,
            actor=f"device:{token.device_id}",
        )
        return issued, dataclasses.replace(token, superseded_at=token.superseded_at or now)

    async def revoke_device(self, device_id: str) -> int:
        """Revoke every token of the device at once; returns how many were live."""
        t = to_epoch(self._clock.now())

        def revoke(conn: Connection) -> int:
            _require_device(conn, device_id)
            _close_operations(conn, device_id, t, CancelReason.DEVICE_REVOKED)
            revoked = _revoke_all(conn, device_id, t)
            _audit_device(conn, "device.revoked", device_id, {"revokedTokens": revoked})
            return revoked

        count = await self._db.write(revoke)
        self._events.publish("registration_ended", device_id, RegistrationEnded.REVOKED)
        return count

    async def delete_device(self, device_id: str) -> None:
        """Forget a device: its tokens stop working and its record is removed."""
        t = to_epoch(self._clock.now())

        def forget(conn: Connection) -> None:
            _require_device(conn, device_id)
            _close_operations(conn, device_id, t, CancelReason.DEVICE_DELETED)
            _revoke_all(conn, device_id, t)
            conn.execute(delete(mqtt_credentials).where(mqtt_credentials.c.device_id == device_id))
            conn.execute(delete(devices).where(devices.c.device_id == device_id))
            conn.execute(delete(twins).where(twins.c.device_id == device_id))
            conn.execute(delete(desired_patches).where(desired_patches.c.device_id == device_id))
            # as IoT Hub: a deleted device's undelivered messages go with it
            conn.execute(delete(c2d).where(c2d.c.device_id == device_id))
            _audit_device(conn, "device.deleted", device_id)

        await self._db.write(forget)
        self._events.publish("registration_ended", device_id, RegistrationEnded.DELETED)

    @staticmethod
    def current_token(conn: Connection, device_id: str) -> RegistrationToken | None:
        """The device's newest token that is not revoked (it may have expired)."""
        c = registration_tokens.c
        row = conn.execute(
            select(registration_tokens)
            .where(c.device_id == device_id, c.revoked_at.is_(None))
            .order_by(c.issued_at.desc())
            .limit(1)
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
        digest = hash_secret(password)

        def find(conn: Connection) -> RegistrationToken | None:
            row = conn.execute(sql.TOKEN_OF_MQTT_PASSWORD, {"b_hash": digest}).first()
            return None if row is None else _rt(row._mapping)

        token = await self._db.read(find)
        if token is None or token.device_id != client_id:
            return None
        if not token.status(self._clock.now(), self.grace_period).usable:
            return None
        return MqttIdentity(token.device_id, token.id, token.usable_until(self.grace_period))

    async def authenticate_sas(
        self, client_id: str | None, username: str | None, password: str | None
    ) -> MqttIdentity | None:
        """The device an IoT Hub dialect CONNECT proves to be, or None: client id
        ``<workspace>:<device>`` (the identity is its device key: ``<device>`` in
        ``default``; an unknown workspace holds no Registration Token), username
        ``<mqtt host>/<client id>/…``, password a SAS for ``<mqtt host>/devices/<client id>``
        not yet expired and signed with the key of one of
        the device's usable Registration Tokens (:meth:`sas_key`), so it dies with that RT.
        The identity ends at the SAS's expiry or the RT's, whichever comes first."""
        if not client_id or not username or not password:
            return None
        token = sas.parse(password)
        workspace, _, bare_id = client_id.partition(":")
        host = self._settings.mqtt_host
        if (
            token is None
            or not workspace
            or not bare_id
            or ":" in bare_id
            or token.resource != sas.resource_uri(host, client_id)
            or not username.startswith(f"{host}/{client_id}/")
        ):
            return None
        device_id = device_key(workspace, bare_id)
        now = self._clock.now()
        sas_expires_at = from_epoch_required(token.expiry)
        if sas_expires_at <= now:
            return None

        def candidates(conn: Connection) -> list[RegistrationToken]:
            c = registration_tokens.c
            rows = conn.execute(
                select(registration_tokens).where(c.device_id == device_id, c.revoked_at.is_(None))
            )
            return [_rt(row._mapping) for row in rows]

        for rt in await self._db.read(candidates):  # the current RT, a parent in its grace
            if rt.status(now, self.grace_period).usable and sas.verify(token, self.sas_key(rt.id)):
                until = rt.usable_until(self.grace_period)
                expires = sas_expires_at if until is None else min(until, sas_expires_at)
                return MqttIdentity(device_id, rt.id, expires)
        return None


def _audit_device(
    conn: Connection,
    action: str,
    key: str,
    detail: dict[str, object] | None = None,
    at: datetime | None = None,
    *,
    actor: str | None = None,
) -> None:
    """An audit event on the device with key ``key`` (in its workspace, by its bare id)."""
    workspace_id, device_id = split_device_key(key)
    record_audit(
        conn,
        action=action,
        target_kind="device",
        target_id=device_id,
        workspace_id=workspace_id,
        detail=detail,
        at=at,
        actor=actor,
    )


def _revoke_all(conn: Connection, device_id: str, t: float) -> int:
    result = conn.execute(sql.REVOKE_DEVICE_TOKENS, {"b_device_id": device_id, "b_now": t})
    return int(result.rowcount)


def _close_operations(conn: Connection, device_id: str, t: float, reason: CancelReason) -> None:
    """Revocation is one switch: no operation of the device may yield a token again."""
    conn.execute(
        sql.CLOSE_DEVICE_OPERATIONS,
        {
            "b_device_id": device_id,
            "b_states": [state.value for state in CLOSED_BY_DEVICE_END],
            "b_now": t,
            "b_reason": reason.value,
        },
    )


def _require_device(conn: Connection, device_id: str) -> None:
    row = conn.execute(select(devices.c.device_id).where(devices.c.device_id == device_id)).first()
    if row is None:
        raise NotFound(f"no device {named_device(device_id)}", field="deviceId")


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
