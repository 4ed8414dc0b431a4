"""API keys for technicians and admins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, RowMapping, insert, or_, select, update

from ..clock import Clock
from ..domain.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationError
from ..domain.workspaces import DEFAULT_WORKSPACE, PLATFORM_WIDE
from ..security import Role, SecretKind, has_kind, hash_secret, new_id, new_secret
from ..store.database import Database, from_epoch, from_epoch_required, to_epoch
from ..store.schema import api_keys
from .audit import record_audit


@dataclass(frozen=True)
class ApiKey:
    """An API key as listed (never with its secret)."""

    id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None
    workspace_id: str = PLATFORM_WIDE
    """The one workspace the key acts in, or ``PLATFORM_WIDE``."""

    def may_act_in(self, workspace_id: str) -> bool:
        """Whether the key may act on the routes of ``workspace_id``."""
        return self.workspace_id in (PLATFORM_WIDE, workspace_id)


@dataclass(frozen=True)
class CreatedApiKey:
    key: ApiKey
    secret: str


class ApiKeyService:
    """Create, list, revoke and check API keys. Checks are cached in memory (invalidated
    on revoke) because every technician call pays for one."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._by_hash: dict[str, ApiKey] = {}

    async def create(
        self,
        name: str,
        role: Role | str,
        *,
        secret: str | None = None,
        workspace_id: str = PLATFORM_WIDE,
    ) -> CreatedApiKey:
        """A new key acting in ``workspace_id`` only (``PLATFORM_WIDE``: everywhere)."""
        if not name or len(name) > 200:
            raise ValidationError("name must be 1-200 characters", field="name")
        try:
            role = Role(role)
        except ValueError:
            raise ValidationError(
                f"role must be one of {', '.join(r.value for r in Role)}", field="role"
            ) from None
        secret = secret or new_secret(SecretKind.API_KEY)
        key = ApiKey(new_id(), name, role, self._clock.now(), None, workspace_id)

        def insert_key(conn: Connection) -> None:
            conn.execute(
                insert(api_keys).values(
                    id=key.id,
                    name=name,
                    role=key.role.value,
                    secret_hash=hash_secret(secret),
                    created_at=to_epoch(key.created_at),
                    workspace_id=workspace_id,
                )
            )
            record_audit(
                conn,
                action="api_key.created",
                target_kind="api_key",
                target_id=key.id,
                workspace_id=_audited_in(workspace_id),
                after={"name": name, "role": key.role, "workspaceId": workspace_id},
                at=key.created_at,
            )

        await self._db.write(insert_key)
        return CreatedApiKey(key, secret)

    async def ensure_bootstrap_admin(self, secret: str | None) -> str | None:
        """Make sure an admin key exists: ``secret`` if given (registered if new), else a
        generated one when no admin key exists yet. Returns only a *generated* secret (to
        print once): a key the operator chose is never echoed."""
        if secret is not None and not has_kind(secret, SecretKind.API_KEY):
            # Settings refuse it first; this guards callers that build services directly.
            raise ValidationError(
                "IIOT_ADMIN_KEY must be an API key starting with 'ak_'", field="IIOT_ADMIN_KEY"
            )

        def known(conn: Connection) -> bool:
            if secret is not None:
                query = select(api_keys.c.id).where(api_keys.c.secret_hash == hash_secret(secret))
            else:
                query = select(api_keys.c.id).where(
                    api_keys.c.role == Role.ADMIN.value,
                    api_keys.c.revoked_at.is_(None),
                    api_keys.c.workspace_id == PLATFORM_WIDE,
                )
            return conn.execute(query).first() is not None

        if await self._db.read(known):
            return None
        created = await self.create("bootstrap admin", Role.ADMIN, secret=secret)
        return created.secret if secret is None else None

    async def list(self, workspace_id: str = DEFAULT_WORKSPACE) -> list[ApiKey]:
        """The keys of a workspace; ``default``'s listing also shows the platform-wide ones
        (every key before workspaces was one)."""

        def rows(conn: Connection) -> list[ApiKey]:
            result = conn.execute(
                select(api_keys).where(_in(workspace_id)).order_by(api_keys.c.created_at)
            )
            return [_key(r._mapping) for r in result]

        return await self._db.scan(rows)

    def forget_workspace(self, workspace_id: str) -> None:
        """Drop a deleted workspace's keys from the cache (the database revoked them)."""
        self._by_hash = {h: k for h, k in self._by_hash.items() if k.workspace_id != workspace_id}

    async def revoke(
        self, key_id: str, *, by: str | None = None, workspace_id: str = DEFAULT_WORKSPACE
    ) -> ApiKey:
        """Revoke a key at once. A key may not revoke itself (``by``): that locks out an
        admin holding only it; rotate by creating the new key, then revoking the old
        one with it."""
        if by is not None and by == key_id:
            raise Conflict(
                "an API key cannot revoke itself: revoke it with another admin key",
                field="keyId",
            )
        now = to_epoch(self._clock.now())

        def revoke_key(conn: Connection) -> ApiKey:
            row = conn.execute(
                select(api_keys).where(api_keys.c.id == key_id, _in(workspace_id))
            ).first()
            if row is None:  # another workspace's key is as unknown as a missing one
                raise NotFound(f"no API key {key_id}", field="id")
            revoked = conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
            if row is None:
                raise NotFound(f"no API key {key_id}", field="id")
            key = _key(row._mapping)
            if revoked.rowcount:  # not again for a key revoked before
                record_audit(
                    conn,
                    action="api_key.revoked",
                    target_kind="api_key",
                    target_id=key_id,
                    workspace_id=_audited_in(key.workspace_id),
                    before={"revokedAt": None},
                    after={"revokedAt": key.revoked_at},
                    detail={"name": key.name, "role": key.role},
                )
            return key

        key = await self._db.write(revoke_key)
        self._by_hash = {h: k for h, k in self._by_hash.items() if k.id != key_id}
        return key

    async def authenticate(self, secret: str, *, required: Role | None = None) -> ApiKey:
        """The key behind ``secret``; :class:`Unauthorized` if unknown or revoked,
        :class:`Forbidden` if its role is not enough."""
        if not has_kind(secret, SecretKind.API_KEY):
            raise Unauthorized("expected an API key (ak_…) as the Bearer token")
        digest = hash_secret(secret)
        key = self._by_hash.get(digest)
        if key is None:

            def find(conn: Connection) -> ApiKey | None:
                row = conn.execute(select(api_keys).where(api_keys.c.secret_hash == digest)).first()
                return None if row is None else _key(row._mapping)

            key = await self._db.read(find)
            if key is None:
                raise Unauthorized("unknown API key")
            if key.revoked_at is None:
                self._by_hash[digest] = key
        if key.revoked_at is not None:
            raise Unauthorized("this API key was revoked")
        if required is Role.ADMIN and key.role is not Role.ADMIN:
            raise Forbidden("this needs an admin API key")
        return key


def _in(workspace_id: str) -> ColumnElement[bool]:
    if workspace_id == DEFAULT_WORKSPACE:
        return or_(
            api_keys.c.workspace_id == workspace_id, api_keys.c.workspace_id == PLATFORM_WIDE
        )
    return api_keys.c.workspace_id == workspace_id


def _audited_in(workspace_id: str) -> str:
    """The workspace whose audit trail shows a key's events: its own, or ``default`` for a
    platform-wide key (``default``'s key listing shows those too)."""
    return DEFAULT_WORKSPACE if workspace_id == PLATFORM_WIDE else workspace_id


def _key(m: RowMapping) -> ApiKey:
    return ApiKey(
        id=m["id"],
        name=m["name"],
        role=Role(m["role"]),
        created_at=from_epoch_required(m["created_at"]),
        revoked_at=from_epoch(m["revoked_at"]),
        workspace_id=m["workspace_id"],
    )
