"""Workspaces: create, list, delete, and the existence check every workspace route makes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, RowMapping, delete, func, insert, select

from ..clock import Clock
from ..domain.errors import Conflict, NotFound
from ..domain.workspaces import DEFAULT_WORKSPACE, key_prefix, validate_workspace_id
from ..store.database import Database, from_epoch_required, to_epoch
from ..store.schema import api_keys, devices, fleet_configurations, provisioning_tokens, workspaces
from .audit import record_audit


@dataclass(frozen=True)
class Workspace:
    id: str
    created_at: datetime


class WorkspaceService:
    """Workspaces of the platform. Known ids are cached in memory (every request under
    ``/api/v1/workspaces/{id}/…`` checks one; a delete drops it from the cache)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._known: set[str] = {DEFAULT_WORKSPACE}

    async def create(self, workspace_id: object) -> Workspace:
        """A new, empty workspace; :class:`Conflict` if the id is taken."""
        checked = validate_workspace_id(workspace_id, field="id")
        workspace = Workspace(checked, self._clock.now())

        def write(conn: Connection) -> None:
            exists = select(workspaces.c.id).where(workspaces.c.id == checked)
            if conn.execute(exists).first() is not None:
                raise Conflict(f"workspace {checked!r} exists", field="id")
            conn.execute(
                insert(workspaces).values(id=checked, created_at=to_epoch(workspace.created_at))
            )
            # in default's trail: platform-wide keys act on workspaces from there
            record_audit(
                conn,
                action="workspace.created",
                target_kind="workspace",
                target_id=checked,
                workspace_id=DEFAULT_WORKSPACE,
                at=workspace.created_at,
            )

        await self._db.write(write)
        self._known.add(checked)
        return workspace

    async def list(self) -> list[Workspace]:
        def read(conn: Connection) -> list[Workspace]:
            rows = conn.execute(select(workspaces).order_by(workspaces.c.id))
            return [_workspace(r._mapping) for r in rows]

        return await self._db.read(read)

    async def get(self, workspace_id: str) -> Workspace:
        def read(conn: Connection) -> Workspace:
            row = conn.execute(select(workspaces).where(workspaces.c.id == workspace_id)).first()
            if row is None:
                raise NotFound(f"no workspace {workspace_id!r}", field="workspaceId")
            return _workspace(row._mapping)

        return await self._db.read(read)

    async def require(self, workspace_id: str) -> str:
        """``workspace_id`` if it exists, else :class:`NotFound` naming it."""
        if workspace_id not in self._known:
            await self.get(workspace_id)
            self._known.add(workspace_id)
        return workspace_id

    async def delete(self, workspace_id: str) -> None:
        """Delete an *empty* workspace: refused (409) while it has devices, so deleting
        never drops a fleet's data by surprise; delete or revoke those first. Its
        Provisioning Tokens, fleet configurations and API keys go with it. ``default`` is
        never deleted (every route outside ``/api/v1/workspaces/{id}/…`` acts on it)."""
        if workspace_id == DEFAULT_WORKSPACE:
            raise Conflict("the default workspace cannot be deleted", field="workspaceId")
        prefix = key_prefix(workspace_id)
        assert prefix is not None

        def write(conn: Connection) -> None:
            row = conn.execute(select(workspaces.c.id).where(workspaces.c.id == workspace_id))
            if row.first() is None:
                raise NotFound(f"no workspace {workspace_id!r}", field="workspaceId")
            count = conn.execute(
                select(func.count())
                .select_from(devices)
                .where(devices.c.device_id.startswith(prefix, autoescape=True))
            ).scalar_one()
            if count:
                raise Conflict(
                    f"workspace {workspace_id!r} has {count} devices: delete them first",
                    field="workspaceId",
                )
            # its tokens cannot start operations any more: revoke rather than delete, the
            # operations they started keep their foreign key
            conn.execute(
                provisioning_tokens.update()
                .where(
                    provisioning_tokens.c.workspace_id == workspace_id,
                    provisioning_tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=to_epoch(self._clock.now()))
            )
            conn.execute(
                delete(fleet_configurations).where(
                    fleet_configurations.c.workspace_id == workspace_id
                )
            )
            conn.execute(
                api_keys.update()
                .where(api_keys.c.workspace_id == workspace_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=to_epoch(self._clock.now()))
            )
            conn.execute(delete(workspaces).where(workspaces.c.id == workspace_id))
            # in default's trail: the deleted workspace's own can no longer be addressed
            record_audit(
                conn,
                action="workspace.deleted",
                target_kind="workspace",
                target_id=workspace_id,
                workspace_id=DEFAULT_WORKSPACE,
            )

        await self._db.write(write)
        self._known.discard(workspace_id)


def _workspace(m: RowMapping) -> Workspace:
    return Workspace(id=m["id"], created_at=from_epoch_required(m["created_at"]))
