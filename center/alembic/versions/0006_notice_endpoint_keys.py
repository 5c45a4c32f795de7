"""queued webhook and WeCom notices name their endpoint by a key of its URL, not its position in center.yaml

No table changes: this revision marks the new meaning of `jobs.target` for those channels, so that an older
edge-center, which reads a target as a position (int(target)), is not started on notices it cannot send, and
so that a SQLite database is copied (center.migrate) before a center of this version first runs on it. A
target written by an older center (a position) is still read as one by this version.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 01:45:00
"""

from collections.abc import Sequence

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass  # an older center then finds keys it reads as positions: put back the copy taken before the upgrade
