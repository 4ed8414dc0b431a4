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


TimeQuery = Annotated[str | None, QueryParameter(format="date-time", max_length=64)]
"""An ISO 8601 time, taken as text and parsed here: Litestar's own datetime decoding also
takes a bare number (``until=0.5``) as a timestamp, which the document does not promise."""


def _time(value: str | None, field: str) -> datetime | None:
    """``value`` as an aware datetime (no zone: UTC, as the API's times are); 400 naming
    ``field`` if it is not an ISO 8601 date and time."""
    if value is None:
        return None
    try:
        if "T" not in value.upper():  # a date alone is not a time
            raise ValueError(value)
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:
        raise ValidationError(
            "expected an ISO 8601 date and time, e.g. 2026-11-27T08:00:00Z", field=field
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


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
        since: TimeQuery = None,
        until: TimeQuery = None,
        before: Annotated[int | None, QueryParameter(ge=1, le=2**53)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> list[AuditEventOut]:
        """Audit events, newest first: who (``actor``: ``api_key:<id>``, ``device:<id>``,
        ``provisioning_token:<id>``, ``system``) did what (``action``, ``operation.`` for a
        prefix) to what (``targetKind``, ``targetId``), when (``since`` inclusive, ``until``
        exclusive), why (``reason``) and in which request (``requestId``, as echoed in
        ``X-Request-Id``). Page with ``before`` = the last ``id`` seen."""
        start, end = _time(since, "since"), _time(until, "until")
        if start is not None and end is not None and end < start:
            raise ValidationError("until must not be before since", field="until")
        matching = AuditFilter(
            action=action,
            actor=actor,
            target_kind=target_kind,
            target_id=target_id,
            request_id=request_id,
            since=start,
            until=end,
        )
        events = await services.db.scan(
            list_audit_events, workspace, matching, before=before, limit=limit
        )
        return [AuditEventOut.of(e) for e in events]


__all__ = ["AuditController"]
