"""Fewer audit indexes (issue 15): keep the two the trail is read by, drop three.

Each audited change writes its row in the change's own transaction, so every index on
``audit_events`` is one more B-tree page written per request. CPU per flow-step
transaction (one UPDATE, SQLite WAL; ``benchmarks/audit_query.py``): 24.6 µs without an
audit row, 84.8 µs with one and revision 0005's five indexes, 59.5 µs with two. In paired
runs on a quiet machine the five cost the provisioning benchmark 11-22 % of its flows/s,
over the issue's 10 % (``docs/audit.md``).

Kept: ``(workspace_id, id)``, the listing's order and paging, and ``(workspace_id,
target_id, id)``, a device's (or token's) history, "what did it do since". Dropped:
``(workspace_id, action, id)``, ``(workspace_id, actor, id)`` and ``(request_id)``; those
filters now walk the workspace's rows newest first until the page is full, which stops
early for anything frequent and scans the workspace's trail for anything rare
(``benchmarks/audit_query.py`` prints what that costs).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

DROPPED = {
    "ix_audit_events_action": ["workspace_id", "action", "id"],
    "ix_audit_events_actor": ["workspace_id", "actor", "id"],
    "ix_audit_events_request": ["request_id"],
}


def upgrade() -> None:
    for name in DROPPED:
        op.drop_index(name, table_name="audit_events")


def downgrade() -> None:
    for name, columns in DROPPED.items():
        op.create_index(name, "audit_events", columns, unique=False)
