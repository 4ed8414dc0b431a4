"""The audit trail: who changed what, when, why, and in which request (issue 15).

Every state-changing admin and device action calls :func:`record_audit` inside its own
transaction, so the audit row commits or rolls back with the change it describes (an
approval refused with 409 leaves no row). The table is append-only in the database itself
(revision 0005's triggers), and no route edits or deletes it.

Who and why come from :data:`audit_context`, a context variable the HTTP layer sets once
per request (``api/audit.py``: the request id middleware and the guard); code outside a
request (expiry, the platform's own automatic responses) records as actor ``system``::

    record_audit(conn, action="operation.approved", target_kind="provisioning_operation",
                 target_id=op.id, workspace_id=ws, before={"state": "pending"},
                 after={"state": "approved"})

Cost: one INSERT into the caller's open transaction, the JSON encoded by msgspec; measured
on ``benchmarks/provisioning_flow.py`` in ``docs/audit.md``.
"""

from __future__ import annotations

import dataclasses
import weakref
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, insert, select

from ..clock import Clock, SystemClock
from ..domain.errors import ValidationError
from ..store.database import from_epoch_required, to_epoch
from ..store.schema import audit_events

SYSTEM = "system"
"""The actor of what the platform does by itself (expiry, supersession, auto-responses)."""

MAX_REASON = 500
"""Characters of a ``reason`` at most."""


@dataclass(frozen=True, slots=True)
class AuditContext:
    """Who acts, in which request, and why: read by :func:`record_audit`."""

    actor: str = SYSTEM
    """``system``, ``api_key:<id>``, ``device:<device key>`` or ``provisioning_token:<id>``."""
    actor_role: str | None = None
    """An API key's role (``admin`` / ``technician``); None for devices and the system."""
    request_id: str | None = None
    """The request's ``X-Request-Id`` (the caller's if sane, else one made up)."""
    reason: str | None = None
    """Why, as the caller said in ``?reason=`` (or a batch body's ``reason``)."""


# the default is frozen (immutable), so sharing it is safe
audit_context: ContextVar[AuditContext] = ContextVar("audit_context", default=AuditContext())  # noqa: B039
"""The current request's :class:`AuditContext`; ``AuditContext()`` (actor ``system``) outside
requests. Database work on a thread pool sees it too (``Database`` copies the context)."""


def validated_reason(reason: str | None, *, field: str = "reason") -> str | None:
    """``reason`` if it is at most :data:`MAX_REASON` characters (empty: None), else a 400
    naming ``field``."""
    if reason is None or reason == "":
        return None
    if len(reason) > MAX_REASON:
        raise ValidationError(f"reason must be at most {MAX_REASON} characters", field=field)
    return reason


def set_reason(reason: str | None, *, field: str = "reason") -> None:
    """Make ``reason`` the current request's reason (e.g. a batch body's ``reason``); an
    absent one keeps the ``?reason=`` already read. 400 naming ``field`` if too long."""
    checked = validated_reason(reason, field=field)
    if checked is not None:
        audit_context.set(dataclasses.replace(audit_context.get(), reason=checked))


_clocks: weakref.WeakKeyDictionary[Engine, Clock] = weakref.WeakKeyDictionary()
_SYSTEM_CLOCK = SystemClock()


def use_clock(engine: Engine, clock: Clock) -> None:
    """Time the audit rows written through ``engine`` by ``clock`` (``Services.open``), so a
    ManualClock's platform records its own time, like every other table."""
    _clocks[engine] = clock


_encode = msgspec.json.Encoder().encode
_COLUMNS = (
    "at",
    "workspace_id",
    "actor",
    "actor_role",
    "action",
    "target_kind",
    "target_id",
    "reason",
    "request_id",
    "before",
    "after",
    "detail",
)
_statements: dict[tuple[str, str], tuple[str, bool]] = {}


def _statement(conn: Connection) -> tuple[str, bool]:
    """The INSERT as the driver takes it, and whether its parameters are positional: compiled
    once per dialect, then run with ``exec_driver_sql``, which skips SQLAlchemy Core's
    per-statement work (about a third of an audit row's cost on SQLite, measured
    in-process: ~120 µs per row through Core, ~85 µs through the driver, 2 cores at load 8)."""
    key = (conn.dialect.name, conn.dialect.driver)
    statement = _statements.get(key)
    if statement is None:
        compiled = insert(audit_events).compile(dialect=conn.dialect, column_keys=list(_COLUMNS))
        assert not compiled.positional or list(compiled.positiontup or ()) == list(_COLUMNS)
        statement = _statements[key] = (str(compiled), bool(compiled.positional))
    return statement


def _json(value: Any) -> str | None:
    return None if value is None else _encode(value).decode()


def record_audit(
    conn: Connection,
    *,
    action: str,
    target_kind: str,
    target_id: str,
    workspace_id: str,
    before: Any = None,
    after: Any = None,
    detail: Any = None,
    at: datetime | None = None,
    actor: str | None = None,
) -> None:
    """Append one audit event in ``conn``'s transaction (it commits or rolls back with the
    change). ``action`` is ``<noun>.<past-tense verb>`` (``operation.approved``);
    ``before``/``after``/``detail`` are anything msgspec encodes as JSON (dicts, lists,
    datetimes); ``at`` defaults to the platform clock's now, ``actor`` to the context's
    (a device refreshing its token proves its Registration Token beside the Provisioning
    Token it authenticated with: it acts as the device)."""
    context = audit_context.get()
    when = at if at is not None else _clocks.get(conn.engine, _SYSTEM_CLOCK).now()
    values = (
        to_epoch(when),
        workspace_id,
        context.actor if actor is None else actor,
        context.actor_role if actor is None else None,
        action,
        target_kind,
        target_id,
        context.reason,
        context.request_id,
        _json(before),
        _json(after),
        _json(detail),
    )
    sql, positional = _statement(conn)
    conn.exec_driver_sql(sql, values if positional else dict(zip(_COLUMNS, values, strict=True)))


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One stored audit event; ``before``/``after``/``detail`` decoded from their JSON."""

    id: int
    at: datetime
    workspace_id: str
    actor: str
    actor_role: str | None
    action: str
    target_kind: str
    target_id: str
    reason: str | None
    request_id: str | None
    before: Any
    after: Any
    detail: Any


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What :func:`list_audit_events` keeps; None: any. ``action`` ending in ``.`` or
    ``*`` is a prefix (``operation.`` is every operation event), else exact."""

    action: str | None = None
    actor: str | None = None
    target_kind: str | None = None
    target_id: str | None = None
    request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_audit_events(
    conn: Connection,
    workspace_id: str,
    matching: AuditFilter,
    *,
    before: int | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """The workspace's events matching ``matching``, newest first (highest id), at most
    ``limit``; page with ``before`` (the last id seen): every row comes exactly once, also
    while new ones are appended (they get higher ids)."""
    c = audit_events.c
    query = select(audit_events).where(c.workspace_id == workspace_id)
    if matching.action is not None:
        if matching.action.endswith(("*", ".")):
            query = query.where(c.action.startswith(matching.action.rstrip("*"), autoescape=True))
        else:
            query = query.where(c.action == matching.action)
    for column, value in (
        (c.actor, matching.actor),
        (c.target_kind, matching.target_kind),
        (c.target_id, matching.target_id),
        (c.request_id, matching.request_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if matching.since is not None:
        query = query.where(c.at >= to_epoch(matching.since))
    if matching.until is not None:
        query = query.where(c.at < to_epoch(matching.until))
    if before is not None:
        query = query.where(c.id < before)
    rows = conn.execute(query.order_by(c.id.desc()).limit(limit))
    return [_event(r._mapping) for r in rows]


_decode = msgspec.json.decode


def _event(m: Any) -> AuditEvent:
    return AuditEvent(
        id=int(m["id"]),
        at=from_epoch_required(m["at"]),
        workspace_id=m["workspace_id"],
        actor=m["actor"],
        actor_role=m["actor_role"],
        action=m["action"],
        target_kind=m["target_kind"],
        target_id=m["target_id"],
        reason=m["reason"],
        request_id=m["request_id"],
        before=None if m["before"] is None else _decode(m["before"]),
        after=None if m["after"] is None else _decode(m["after"]),
        detail=None if m["detail"] is None else _decode(m["detail"]),
    )


__all__ = [
    "MAX_REASON",
    "SYSTEM",
    "AuditContext",
    "AuditEvent",
    "AuditFilter",
    "audit_context",
    "list_audit_events",
    "record_audit",
    "set_reason",
    "use_clock",
    "validated_reason",
]
