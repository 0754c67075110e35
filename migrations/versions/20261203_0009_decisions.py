"""Forgiving decisions (issue 14, sections 3 and 6): why and when Kimmie declined, the times she
offered, and the one-time links of her e-mail.

- appointment.decline_code: the reason she tapped (fully_booked, not_a_fit, other), which shaped the
  customer's message; with decided_at (already there) it bounds the 5-minute Undo.
- appointment.offered_starts: the starts she offered with a decline. The customer accepting one of
  them is confirmed at once (after the slot check); any other time stays a request for her.
- action_link_use: the nonces of used Approve/Decline e-mail links, so each works once.

Existing rows: no code, no offers (nullable); nothing is back-filled.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("appointment") as batch:
        batch.add_column(sa.Column("decline_code", sa.String(length=20), nullable=True))
        batch.add_column(
            sa.Column(
                "offered_starts", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
            )
        )
    op.create_table(
        "action_link_use",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("appointment_id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_action_link_use")),
    )


def downgrade() -> None:
    op.drop_table("action_link_use")
    with op.batch_alter_table("appointment") as batch:
        batch.drop_column("offered_starts")
        batch.drop_column("decline_code")
