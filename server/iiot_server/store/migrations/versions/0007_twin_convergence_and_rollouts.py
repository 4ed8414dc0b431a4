"""Twin convergence and staged rollouts (issue 15): per-property desired/reported history and rollout stages.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
