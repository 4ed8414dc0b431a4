"""The audit trail (``services/audit.py``) for admins: ``GET /api/v1/audit``, newest first,
paged and filtered. Served under ``/api/v1`` and ``/api/v1/workspaces/{workspaceId}`` like
every controller of ``api/admin.py``: a workspace's key reads only its workspace's events, a
platform-wide key the addressed workspace's (``default``'s also holds the platform-wide
actions: workspaces, platform-wide API keys). Read-only: no route edits or deletes an event,
and the database refuses it anyway (revision 0005)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from ..domain.errors import ValidationError
from ..services import Services
from ..services.audit import AuditFilter, list_audit_events
from .models import AuditEventOut

ACTION_PATTERN = r"^[a-z_]+(\.[a-z_]*)?\*?$"
"""``operation.approved`` (exact), ``operation.`` or ``operation*`` (prefix)."""


def _utc(value: datetime | None) -> datetime | None:
    """A time without a zone is UTC (the API's times are)."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class AuditController(Controller):
    """The workspace's audit trail (admin)."""

    path = "/audit"
    tags = ["audit"]
    security = [{"apiKey": []}]

    @get("/")
    async def list_audit(
        self,
        services: NamedDependency[Services],
        workspace: NamedDependency[str],
        action: Annotated[str | None, QueryParameter(pattern=ACTION_PATTERN, max_length=64)] = None,
        actor: Annotated[str | None, QueryParameter(max_length=200)] = None,
        target_kind: Annotated[str | None, QueryParameter(name="targetKind", max_length=40)] = None,
        target_id: Annotated[str | None, QueryParameter(name="targetId", max_length=200)] = None,
        request_id: Annotated[str | None, QueryParameter(name="requestId", max_length=64)] = None,
        since: Annotated[datetime | None, QueryParameter()] = None,
        until: Annotated[datetime | None, QueryParameter()] = None,
        before: Annotated[int | None, QueryParameter(ge=1, le=2**53)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> list[AuditEventOut]:
        """Audit events, newest first: who (``actor``: ``api_key:<id>``, ``device:<id>``,
        ``provisioning_token:<id>``, ``system``) did what (``action``, ``operation.`` for a
        prefix) to what (``targetKind``, ``targetId``), when (``since`` inclusive, ``until``
        exclusive), why (``reason``) and in which request (``requestId``, as echoed in
        ``X-Request-Id``). Page with ``before`` = the last ``id`` seen."""
        since, until = _utc(since), _utc(until)
        if since is not None and until is not None and until < since:
            raise ValidationError("until must not be before since", field="until")
        matching = AuditFilter(
            action=action,
            actor=actor,
            target_kind=target_kind,
            target_id=target_id,
            request_id=request_id,
            since=since,
            until=until,
        )
        events = await services.db.scan(
            list_audit_events, workspace, matching, before=before, limit=limit
        )
        return [AuditEventOut.of(e) for e in events]


__all__ = ["AuditController"]
