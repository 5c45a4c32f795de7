"""when retention last deleted the files of an event that never got a case

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import center.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("swept_at", center.db.UtcDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # SQLite's own DROP COLUMN (3.35+), not a batch's copy of the table: dropping the old `events`, which the
    # evidence rows refer to, fails under the center's foreign_keys=ON.
    op.drop_column("events", "swept_at")
