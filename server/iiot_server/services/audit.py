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
from sqlalchemy import Connection, Engine, insert

from ..clock import Clock, SystemClock
from ..domain.errors import ValidationError
from ..store.database import to_epoch
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
_insert = insert(audit_events)


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
) -> None:
    """Append one audit event in ``conn``'s transaction (it commits or rolls back with the
    change). ``action`` is ``<noun>.<past-tense verb>`` (``operation.approved``);
    ``before``/``after``/``detail`` are anything msgspec encodes as JSON (dicts, lists,
    datetimes); ``at`` defaults to the platform clock's now."""
    context = audit_context.get()
    when = at if at is not None else _clocks.get(conn.engine, _SYSTEM_CLOCK).now()
    conn.execute(
        _insert,
        {
            "at": to_epoch(when),
            "workspace_id": workspace_id,
            "actor": context.actor,
            "actor_role": context.actor_role,
            "action": action,
            "target_kind": target_kind,
            "target_id": target_id,
            "reason": context.reason,
            "request_id": context.request_id,
            "before": _json(before),
            "after": _json(after),
            "detail": _json(detail),
        },
    )


__all__ = [
    "MAX_REASON",
    "SYSTEM",
    "AuditContext",
    "audit_context",
    "record_audit",
    "set_reason",
    "use_clock",
    "validated_reason",
]
