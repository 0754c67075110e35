"""n8n deliveries and Twenty CRM links (issue 13).

- `integration_delivery`: one row per (event id, subscriber) an integration has accepted. The n8n
  delivery job checks it before posting and writes it after a 2xx, so a job run again (a crash after
  the 200, a lease that expired) never posts an accepted event twice.
- `client.twenty_person_id`: the Twenty Person a client is, found by e-mail or phone once and then
  patched, never created again.
- `twenty_record`: the other Twenty records Cheshire keeps current (an appointment's Note and Task,
  or its `appointments` record; a pet's `pets` record), by local kind and id.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "integration_delivery",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("subscriber", sa.String(length=30), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", "subscriber", name=op.f("pk_integration_delivery")),
    )
    op.create_table(
        "twenty_record",
        sa.Column("local_kind", sa.String(length=20), nullable=False),
        sa.Column("local_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("twenty_object", sa.String(length=60), nullable=False),
        sa.Column("twenty_id", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("local_kind", "local_id", "twenty_object", name=op.f("pk_twenty_record")),
    )
    with op.batch_alter_table("client") as batch:
        batch.add_column(sa.Column("twenty_person_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("client") as batch:
        batch.drop_column("twenty_person_id")
    op.drop_table("twenty_record")
    op.drop_table("integration_delivery")
