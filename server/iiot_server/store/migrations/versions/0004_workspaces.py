"""Workspaces (issue 16): a ``workspaces`` table holding ``default``; the workspace of each
Provisioning Token, API key and fleet configuration; ``device_id`` columns wide enough for a
device key ``<workspace>:<device>`` (``domain/workspaces.py``).

Existing data lands in ``default``: device keys there are the bare Device IDs, so no row
changes; tokens and configurations get ``default``; API keys get ``*``, platform-wide, as
every key was before (the bootstrap admin's keeps acting everywhere).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

DEVICE_KEY_COLUMNS = {
    "cloud_to_device_messages": ("device_id", False),
    "connection_events": ("device_id", False),
    "desired_patches": ("device_id", False),
    "devices": ("device_id", False),
    "fleet_configurations": ("id", False),
    "messages": ("device_id", False),
    "mqtt_credentials": ("device_id", False),
    "provisioning_operations": ("device_id", True),
    "registration_tokens": ("device_id", False),
    "twins": ("device_id", False),
}
"""Table → (column, nullable) widened from 90 to 181 characters. Not
``provisioning_tokens.device_id``: a token's default Device ID is bare (the token names its
workspace), and SQLite's batch copy of that table breaks its operations' foreign key."""

WORKSPACE_COLUMNS = {
    "api_keys": "*",
    "provisioning_tokens": "default",
    "fleet_configurations": "default",
}
"""Table → the ``workspace_id`` its existing rows get."""


def upgrade() -> None:
    workspaces = op.create_table(
        "workspaces",
        sa.Column("id", sa.String(length=90), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # ``default`` is as old as the platform's data: its first API key's time, if any
    first = op.get_bind().execute(sa.text("SELECT MIN(created_at) FROM api_keys")).scalar()
    op.bulk_insert(workspaces, [{"id": "default", "created_at": float(first or 0.0)}])
    for table, default in WORKSPACE_COLUMNS.items():
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(
                sa.Column(
                    "workspace_id", sa.String(length=90), server_default=default, nullable=False
                )
            )
    for table, (column, nullable) in DEVICE_KEY_COLUMNS.items():
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column(
                column,
                existing_type=sa.String(length=90),
                type_=sa.String(length=181),
                existing_nullable=nullable,
            )


def downgrade() -> None:
    for table, (column, nullable) in DEVICE_KEY_COLUMNS.items():
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column(
                column,
                existing_type=sa.String(length=181),
                type_=sa.String(length=90),
                existing_nullable=nullable,
            )
    for table in WORKSPACE_COLUMNS:
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("workspace_id")
    op.drop_table("workspaces")
