"""Twin convergence and staged rollouts (issue 15): per-property states, rollout stages.

``twin_property_states``: per device and top-level desired property, who set it (a
configuration at a priority, or a manual patch), when, and its convergence state.
``rollout_members``: the devices a staged rollout gave its configuration, by stage.
``fleet_configurations`` gains the rollout plan and where it stands. Existing twins get no
rows: their properties have no recorded change, and get one at their next desired change.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

ROLLOUT_COLUMNS = (
    ("rollout", sa.JSON()),
    ("rollout_state", sa.String(length=12)),
    ("rollout_stage", sa.Integer()),
    ("rollout_reason", sa.String(length=500)),
    ("rollout_updated_at", sa.Float()),
)


def upgrade() -> None:
    op.create_table(
        "twin_property_states",
        sa.Column("device_id", sa.String(length=181), nullable=False),
        sa.Column("property", sa.Text(), nullable=False),
        sa.Column("desired_version", sa.Integer(), nullable=False),
        sa.Column("changed_at", sa.Float(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("configuration_id", sa.String(length=90), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("state_since", sa.Float(), nullable=False),
        sa.Column("converged_at", sa.Float(), nullable=True),
        sa.Column("drifted_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("device_id", "property"),
    )
    op.create_index("ix_twin_property_states_state", "twin_property_states", ["state", "property"])
    op.create_index(
        "ix_twin_property_states_configuration",
        "twin_property_states",
        ["configuration_id", "state"],
    )
    op.create_table(
        "rollout_members",
        sa.Column("configuration_id", sa.String(length=181), nullable=False),
        sa.Column("device_id", sa.String(length=181), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("admitted_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("configuration_id", "device_id"),
    )
    op.create_index("ix_rollout_members_device", "rollout_members", ["device_id"])
    with op.batch_alter_table("fleet_configurations") as batch_op:
        for name, kind in ROLLOUT_COLUMNS:
            batch_op.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fleet_configurations") as batch_op:
        for name, _ in reversed(ROLLOUT_COLUMNS):
            batch_op.drop_column(name)
    op.drop_index("ix_rollout_members_device", table_name="rollout_members")
    op.drop_table("rollout_members")
    op.drop_index("ix_twin_property_states_configuration", table_name="twin_property_states")
    op.drop_index("ix_twin_property_states_state", table_name="twin_property_states")
    op.drop_table("twin_property_states")
