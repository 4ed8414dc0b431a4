"""Leak detection (issue 15): the alerts table (``services/alerts.py``): what the platform
flagged (kind, severity, subject: a device or a Provisioning Token), its evidence as JSON
text, the automatic response taken, repeats of an open alert and its acknowledgement.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("workspace_id", sa.String(length=90), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("device_id", sa.String(length=181), nullable=True),
        sa.Column("provisioning_token_id", sa.String(length=36), nullable=True),
        sa.Column("evidence", sa.String(), nullable=False),
        sa.Column("response", sa.String(length=40), nullable=True),
        sa.Column("occurrences", sa.Integer(), nullable=False),
        sa.Column("last_seen_at", sa.Float(), nullable=False),
        sa.Column("acknowledged_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alerts_workspace_at", "alerts", ["workspace_id", "at"], unique=False)
    op.create_index(
        "ix_alerts_subject",
        "alerts",
        ["kind", "device_id", "provisioning_token_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_alerts_subject", table_name="alerts")
    op.drop_index("ix_alerts_workspace_at", table_name="alerts")
    op.drop_table("alerts")
