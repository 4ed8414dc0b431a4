"""Index provisioning operations by their provisioning token.

Every device poll (``SELECT_OPERATION_OF_TOKEN``) and every operation start
(``OPEN_OPERATIONS_OF_TOKEN``, the per-token open-operation limit) filters
``provisioning_operations.provisioning_token_id``; without this index the second scans the
open operations of every token.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index(
        "ix_operations_token", "provisioning_operations", ["provisioning_token_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_operations_token", table_name="provisioning_operations")
