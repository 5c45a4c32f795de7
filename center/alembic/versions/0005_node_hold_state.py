"""what each node last said of an event's evidence hold; audit lines found by action and target

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import center.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("node_hold", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("node_hold_at", center.db.UtcDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.create_index("ix_audit_action_target", ["action", "target"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_action_target")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("node_hold_at")
        batch_op.drop_column("node_hold")
