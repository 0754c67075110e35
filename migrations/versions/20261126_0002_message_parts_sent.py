"""Outbound delivery progress on the message row: how many parts of a multi-part reply the platform
accepted (`parts_sent`) and on which channel identity (`parts_identity_id`), so a retried
`deliver_message` job resumes after them instead of sending them again (core/delivery.py).

Existing rows get 0 parts and no identity: a pending message starts from its first part, as before.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parts_sent", sa.Integer(), server_default="0", nullable=False))
        big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
        batch_op.add_column(sa.Column("parts_identity_id", big_id, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_column("parts_identity_id")
        batch_op.drop_column("parts_sent")
