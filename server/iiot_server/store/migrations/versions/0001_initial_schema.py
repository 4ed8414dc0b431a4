"""The schema as ``metadata.create_all`` made it before migrations (commit 593ff46).

A database made by that code has these tables and no ``alembic_version``: the platform
stamps it at this revision instead of running it (``migrations.upgrade``).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
    )
    op.create_table(
        "provisioning_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("max_registration_token_lifetime", sa.Float(), nullable=True),
        sa.Column("registration_token_lifetime_override", sa.String(length=20), nullable=False),
        sa.Column("allow_infinite_lifetime", sa.Boolean(), nullable=False),
        sa.Column("device_id", sa.String(length=90), nullable=True),
        sa.Column("device_id_override", sa.String(length=40), nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
    )
    op.create_index(
        "ix_provisioning_tokens_batch_id", "provisioning_tokens", ["batch_id"], unique=False
    )
    op.create_table(
        "provisioning_operations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("provisioning_token_id", sa.String(length=36), nullable=False),
        sa.Column("verification_code", sa.String(length=9), nullable=False),
        sa.Column("device_id", sa.String(length=90), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("approved_at", sa.Float(), nullable=True),
        sa.Column("completed_at", sa.Float(), nullable=True),
        sa.Column("cancelled_at", sa.Float(), nullable=True),
        sa.Column("cancel_reason", sa.String(length=20), nullable=True),
        sa.Column("registration_token_lifetime", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["provisioning_token_id"], ["provisioning_tokens.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_operations_code", "provisioning_operations", ["verification_code"], unique=False
    )
    op.create_index("ix_operations_device", "provisioning_operations", ["device_id"], unique=False)
    op.create_index(
        "ix_operations_state_expiry",
        "provisioning_operations",
        ["state", "expires_at"],
        unique=False,
    )
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(length=90), nullable=False),
        sa.Column("provisioning_token_id", sa.String(length=36), nullable=False),
        sa.Column("provisioning_operation_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("provisioned_at", sa.Float(), nullable=False),
        sa.Column("registered_at", sa.Float(), nullable=True),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("last_connected_at", sa.Float(), nullable=True),
        sa.Column("last_disconnected_at", sa.Float(), nullable=True),
        sa.Column("connection_takeovers", sa.Integer(), nullable=False),
        sa.Column("last_takeover_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_table(
        "connection_events",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=90), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("takeover", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index(
        "ix_connection_events_device_seq",
        "connection_events",
        ["device_id", "seq"],
        unique=False,
    )
    op.create_table(
        "registration_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.String(length=90), nullable=False),
        sa.Column("provisioning_token_id", sa.String(length=36), nullable=False),
        sa.Column("provisioning_operation_id", sa.String(length=36), nullable=False),
        sa.Column("parent_id", sa.String(length=36), nullable=True),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("issued_at", sa.Float(), nullable=False),
        sa.Column("lifetime", sa.Float(), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("superseded_at", sa.Float(), nullable=True),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
    )
    op.create_index(
        "ix_registration_tokens_device_id", "registration_tokens", ["device_id"], unique=False
    )
    op.create_index(
        "ix_registration_tokens_parent_id", "registration_tokens", ["parent_id"], unique=False
    )
    op.create_table(
        "mqtt_credentials",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.String(length=90), nullable=False),
        sa.Column("registration_token_id", sa.String(length=36), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("issued_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
    )
    op.create_index(
        "ix_mqtt_credentials_device_id", "mqtt_credentials", ["device_id"], unique=False
    )
    op.create_index(
        "ix_mqtt_credentials_registration_token_id",
        "mqtt_credentials",
        ["registration_token_id"],
        unique=False,
    )
    op.create_table(
        "messages",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=90), nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=128), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index(
        "ux_messages_identity", "messages", ["device_id", "stream", "message_id"], unique=True
    )
    op.create_index(
        "ix_messages_device_stream_seq", "messages", ["device_id", "stream", "seq"], unique=False
    )
    op.create_table(
        "twins",
        sa.Column("device_id", sa.String(length=90), nullable=False),
        sa.Column("desired", sa.JSON(), nullable=False),
        sa.Column("desired_version", sa.Integer(), nullable=False),
        sa.Column("desired_updated_at", sa.Float(), nullable=True),
        sa.Column("reported", sa.JSON(), nullable=False),
        sa.Column("reported_version", sa.Integer(), nullable=False),
        sa.Column("reported_updated_at", sa.Float(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("tags_version", sa.Integer(), nullable=False),
        sa.Column("tags_updated_at", sa.Float(), nullable=True),
        sa.Column("configured", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_table(
        "fleet_configurations",
        sa.Column("id", sa.String(length=90), nullable=False),
        sa.Column("target_condition", sa.JSON(), nullable=False),
        sa.Column("desired_properties", sa.JSON(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "desired_patches",
        sa.Column("device_id", sa.String(length=90), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("patch", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "version"),
    )


def downgrade() -> None:
    for table in (
        "desired_patches",
        "fleet_configurations",
        "twins",
        "messages",
        "mqtt_credentials",
        "registration_tokens",
        "connection_events",
        "devices",
        "provisioning_operations",
        "provisioning_tokens",
        "api_keys",
    ):
        op.drop_table(table)
