"""API keys for technicians and admins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import RowMapping, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ..clock import Clock
from ..domain.errors import Forbidden, NotFound, Unauthorized, ValidationError
from ..security import Role, SecretKind, has_kind, hash_secret, new_id, new_secret
from ..store.database import from_epoch, from_epoch_required, to_epoch
from ..store.schema import api_keys


@dataclass(frozen=True)
class ApiKey:
    """An API key as listed (never with its secret)."""

    id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class CreatedApiKey:
    key: ApiKey
    secret: str


class ApiKeyService:
    """Create, list, revoke and check API keys. Checks are cached in memory (invalidated
    on revoke) because every technician call pays for one."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self._by_hash: dict[str, ApiKey] = {}

    async def create(
        self, name: str, role: Role | str, *, secret: str | None = None
    ) -> CreatedApiKey:
        if not name or len(name) > 200:
            raise ValidationError("name must be 1-200 characters", field="name")
        try:
            role = Role(role)
        except ValueError:
            raise ValidationError(
                f"role must be one of {', '.join(r.value for r in Role)}", field="role"
            ) from None
        secret = secret or new_secret(SecretKind.API_KEY)
        key = ApiKey(new_id(), name, role, self._clock.now(), None)
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(api_keys).values(
                    id=key.id,
                    name=name,
                    role=role.value,
                    secret_hash=hash_secret(secret),
                    created_at=to_epoch(key.created_at),
                )
            )
        return CreatedApiKey(key, secret)

    async def ensure_bootstrap_admin(self, secret: str | None) -> str | None:
        """Make sure an admin key exists. Returns a newly created secret (to print once),
        or None when ``secret`` was already known or admin keys already exist."""
        async with self._engine.connect() as conn:
            if secret is not None:
                row = (
                    await conn.execute(
                        select(api_keys.c.id).where(api_keys.c.secret_hash == hash_secret(secret))
                    )
                ).first()
                if row is not None:
                    return None
            else:
                row = (
                    await conn.execute(
                        select(api_keys.c.id).where(
                            api_keys.c.role == Role.ADMIN.value, api_keys.c.revoked_at.is_(None)
                        )
                    )
                ).first()
                if row is not None:
                    return None
        created = await self.create("bootstrap admin", Role.ADMIN, secret=secret)
        return created.secret

    async def list(self) -> list[ApiKey]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(api_keys).order_by(api_keys.c.created_at))).all()
        return [_key(row._mapping) for row in rows]

    async def revoke(self, key_id: str) -> ApiKey:
        now = to_epoch(self._clock.now())
        async with self._engine.begin() as conn:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        if row is None:
            raise NotFound(f"no API key {key_id}", field="id")
        self._by_hash = {h: k for h, k in self._by_hash.items() if k.id != key_id}
        return _key(row._mapping)

    async def authenticate(self, secret: str, *, required: Role | None = None) -> ApiKey:
        """The key behind ``secret``; :class:`Unauthorized` if unknown or revoked,
        :class:`Forbidden` if its role is not enough."""
        if not has_kind(secret, SecretKind.API_KEY):
            raise Unauthorized("expected an API key (ak_…) as the Bearer token")
        digest = hash_secret(secret)
        key = self._by_hash.get(digest)
        if key is None:
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(select(api_keys).where(api_keys.c.secret_hash == digest))
                ).first()
            if row is None:
                raise Unauthorized("unknown API key")
            key = _key(row._mapping)
            if key.revoked_at is None:
                self._by_hash[digest] = key
        if key.revoked_at is not None:
            raise Unauthorized("this API key was revoked")
        if required is Role.ADMIN and key.role is not Role.ADMIN:
            raise Forbidden("this needs an admin API key")
        return key


def _key(m: RowMapping) -> ApiKey:
    return ApiKey(
        id=m["id"],
        name=m["name"],
        role=Role(m["role"]),
        created_at=from_epoch_required(m["created_at"]),
        revoked_at=from_epoch(m["revoked_at"]),
    )
