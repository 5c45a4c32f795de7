"""camera problems and storage level from the nodes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import center.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "camera_problems",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("msg_id", sa.String(length=128), nullable=False),
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.Column("camera", sa.String(length=128), nullable=False),
        sa.Column("episode", sa.String(length=128), nullable=False),
        sa.Column("problem", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("at", center.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("received_at", center.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("msg_id"),
    )
    with op.batch_alter_table("camera_problems", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_camera_problems_node"), ["node"], unique=False)
        batch_op.create_index(batch_op.f("ix_camera_problems_received_at"), ["received_at"], unique=False)
    with op.batch_alter_table("cameras", schema=None) as batch_op:
        batch_op.add_column(sa.Column("problems", sa.JSON(), nullable=True))
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("storage", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("storage")
    with op.batch_alter_table("cameras", schema=None) as batch_op:
        batch_op.drop_column("problems")
    with op.batch_alter_table("camera_problems", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_camera_problems_received_at"))
        batch_op.drop_index(batch_op.f("ix_camera_problems_node"))
    op.drop_table("camera_problems")
