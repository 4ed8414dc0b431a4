"""Pausing a Provisioning Token (issue 15): ``provisioning_tokens`` gains ``paused_at``
(epoch seconds; NULL: not paused) and ``paused_reason``. A paused token refuses new
Provisioning Operations until resumed; unlike revocation, this is reversible. Existing
tokens are not paused.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("provisioning_tokens") as batch_op:
        batch_op.add_column(sa.Column("paused_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("paused_reason", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("provisioning_tokens") as batch_op:
        batch_op.drop_column("paused_reason")
        batch_op.drop_column("paused_at")
