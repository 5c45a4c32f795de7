"""retention marks each evidence file it deleted (evidence.swept_at), in place of the event's mark

The marks before it were times compared with each file's received_at: a case's files received up to its last
`retention` history entry, an event's (without a case) up to its `events.swept_at`. A file whose row was stamped
before a sweep but committed after it was then taken for swept, and stayed on the disk for ever. Upgraded, every
file those marks covered gets the time of the sweep that covered it, and `events.swept_at` goes: nothing reads it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import center.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEPT_KINDS = ("manifest",)  # center.retention.KEPT_KINDS as of this revision: never swept, never marked

evidence = sa.table(
    "evidence",
    sa.column("id", sa.Integer),
    sa.column("event_pk", sa.Integer),
    sa.column("case_id", sa.Integer),
    sa.column("kind", sa.String),
    sa.column("received_at", center.db.UtcDateTime(timezone=True)),
    sa.column("swept_at", center.db.UtcDateTime(timezone=True)),
)
events = sa.table(
    "events",
    sa.column("id", sa.Integer),
    sa.column("case_id", sa.Integer),
    sa.column("swept_at", center.db.UtcDateTime(timezone=True)),
)
history = sa.table(
    "history",
    sa.column("case_id", sa.Integer),
    sa.column("action", sa.String),
    sa.column("at", center.db.UtcDateTime(timezone=True)),
)


def upgrade() -> None:
    with op.batch_alter_table("evidence", schema=None) as batch_op:
        batch_op.add_column(sa.Column("swept_at", center.db.UtcDateTime(timezone=True), nullable=True))
    swept = evidence.c.kind.not_in(KEPT_KINDS)
    # An event's sweep while it had no case came first (a case's sweep skipped what it had taken): its files
    # received up to its mark. That mark is the only time it kept: the newest received_at of the files it took.
    ev = events.alias("ev")
    event_mark = (
        sa.select(ev.c.swept_at)
        .where(ev.c.id == evidence.c.event_pk, ev.c.swept_at.is_not(None), evidence.c.received_at <= ev.c.swept_at)
        .correlate_except(ev)
        .scalar_subquery()
    )
    op.execute(evidence.update().where(swept, event_mark.is_not(None)).values(swept_at=event_mark))
    # Then a case's: a file (of its events, or a photo) received up to a `retention` entry went at the first such
    # entry at or after it.
    cased = sa.select(ev.c.case_id).where(ev.c.id == evidence.c.event_pk).correlate_except(ev).scalar_subquery()
    h = history.alias("h")
    case_mark = (
        sa.select(sa.func.min(h.c.at))
        .where(
            sa.or_(h.c.case_id == cased, h.c.case_id == evidence.c.case_id),
            h.c.action == "retention",
            h.c.at >= evidence.c.received_at,
        )
        .correlate_except(h)
        .scalar_subquery()
    )
    op.execute(evidence.update().where(swept, evidence.c.swept_at.is_(None)).values(swept_at=case_mark))
    # SQLite's own DROP COLUMN (3.35+), not a batch's copy of the table: dropping the old `events`, which the
    # evidence rows refer to, fails under the center's foreign_keys=ON.
    op.drop_column("events", "swept_at")


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("swept_at", center.db.UtcDateTime(timezone=True), nullable=True))
    # An event's mark can say only "every file received up to then": the newest file marked with no file not
    # marked received before it. Never more: a file it covered but not deleted would stay for ever. Files marked
    # that neither it nor a `retention` entry covers are swept again by the package before, counted as already
    # gone; a case's file not marked but received before its last entry is taken for swept again, as it was.
    marked, unmarked = evidence.alias("marked"), evidence.alias("unmarked")
    earlier_unmarked = (
        sa.exists()
        .where(
            unmarked.c.event_pk == events.c.id,
            unmarked.c.kind.not_in(KEPT_KINDS),
            unmarked.c.swept_at.is_(None),
            unmarked.c.received_at <= marked.c.received_at,
        )
        .correlate_except(unmarked)
    )
    newest = (
        sa.select(sa.func.max(marked.c.received_at))
        .where(
            marked.c.event_pk == events.c.id,
            marked.c.kind.not_in(KEPT_KINDS),
            marked.c.swept_at.is_not(None),
            ~earlier_unmarked,
        )
        .correlate_except(marked)
        .scalar_subquery()
    )
    op.execute(events.update().values(swept_at=newest))
    op.drop_column("evidence", "swept_at")  # as in upgrade: no copy of the table
