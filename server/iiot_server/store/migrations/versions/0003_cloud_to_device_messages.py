"""cloud_to_device_messages: messages the platform sends a device (IoT Hub's
cloud-to-device messages), kept until its PUBACK or expiry (schema.py, commit 70f319f).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("cloud_to_device_messages"):
        # made by create_all between commit 70f319f and migrations (this session only)
        return
    op.create_table(
        "cloud_to_device_messages",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.String(length=90), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("delivered_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index(
        "ix_c2d_device_pending",
        "cloud_to_device_messages",
        ["device_id", "delivered_at", "seq"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_c2d_device_pending", table_name="cloud_to_device_messages")
    op.drop_table("cloud_to_device_messages")
