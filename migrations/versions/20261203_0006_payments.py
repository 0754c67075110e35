"""Stripe deposits (issue 12): the `payment` table grows what a deposit or card hold needs.

The initial schema had a bare `payment` row (session id, intent id, amount, status). A deposit now
also records its client, its kind ("charge" or "hold"), the refund's id, when its Checkout Session
expires, and a status history (every money movement, in order). One payment per appointment (the
Checkout idempotency key is the appointment id), so the appointment index becomes unique; the intent
id gets an index because PaymentIntent webhooks find their payment by it. Webhook redeliveries are
caught by the existing `processed_event` table (source "stripe").

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite")))
        batch_op.add_column(sa.Column("kind", sa.String(length=10), server_default="charge", nullable=False))
        batch_op.add_column(sa.Column("stripe_refund_id", sa.String(length=255)))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True)))
        batch_op.add_column(sa.Column("history", _JSON, server_default="[]", nullable=False))
        batch_op.create_foreign_key(
            batch_op.f("fk_payment_client_id_client"), "client", ["client_id"], ["id"], ondelete="SET NULL"
        )
        batch_op.drop_index(batch_op.f("ix_payment_appointment_id"))
        batch_op.create_index(batch_op.f("ix_payment_appointment_id"), ["appointment_id"], unique=True)
        batch_op.create_index(
            batch_op.f("ix_payment_stripe_payment_intent_id"), ["stripe_payment_intent_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_stripe_payment_intent_id"))
        batch_op.drop_index(batch_op.f("ix_payment_appointment_id"))
        batch_op.create_index(batch_op.f("ix_payment_appointment_id"), ["appointment_id"], unique=False)
        batch_op.drop_constraint(batch_op.f("fk_payment_client_id_client"), type_="foreignkey")
        batch_op.drop_column("history")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("stripe_refund_id")
        batch_op.drop_column("kind")
        batch_op.drop_column("client_id")
