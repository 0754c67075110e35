"""Reachable customers (issue 14, sections 1/2): what a reminder needs to arrive, and who Kimmie's
cards name.

- `channel_identity.handle`: the person's username on that channel (Instagram username, Telegram
  @username), shown on Kimmie's cards beside the name.
- `message.purpose` ("reminder"), `message.template` (the utility template a reminder may go out as,
  past Meta's 24-hour window) and `message.fetched_at` (when the website widget fetched the message:
  a web reminder counts as delivered only then).
- `appointment.reminder_undelivered_at` (no route reached the customer), `reminder_listed_at` (it was
  on Kimmie's daily list) and `reminder_confirmed_at` (the customer, or Kimmie on their behalf,
  confirmed the visit).

Every column is nullable: existing rows mean "no handle, an ordinary message, nothing pending".

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_APPOINTMENT = ("reminder_undelivered_at", "reminder_listed_at", "reminder_confirmed_at")


def upgrade() -> None:
    with op.batch_alter_table("channel_identity", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handle", sa.String(length=200), nullable=True))
    json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purpose", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("template", json, nullable=True))
        batch_op.add_column(sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("appointment", schema=None) as batch_op:
        for name in _APPOINTMENT:
            batch_op.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("appointment", schema=None) as batch_op:
        for name in reversed(_APPOINTMENT):
            batch_op.drop_column(name)
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_column("fetched_at")
        batch_op.drop_column("template")
        batch_op.drop_column("purpose")
    with op.batch_alter_table("channel_identity", schema=None) as batch_op:
        batch_op.drop_column("handle")
