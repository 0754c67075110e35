"""Domain events: one row per business change (booking.requested, booking.confirmed, client.created,
...), written in the same transaction as the change. Follow-up jobs and integrations (n8n, Twenty CRM,
Stripe deposits) start from these rows, so a new subscriber never means editing a booking method.

Existing data gets no events: history before this revision is in the appointment rows themselves.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "domain_event",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=60), nullable=False),
        sa.Column("subject", sa.String(length=80), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domain_event")),
    )
    op.create_index(op.f("ix_domain_event_type"), "domain_event", ["type"])
    op.create_index(
        op.f("ix_domain_event_subject_occurred_at"), "domain_event", ["subject", "occurred_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_domain_event_subject_occurred_at"), table_name="domain_event")
    op.drop_index(op.f("ix_domain_event_type"), table_name="domain_event")
    op.drop_table("domain_event")
