"""A pet saved by the button flow before its name is known is marked `placeholder` (named "Dog N" on
the record). The assistant's save_pet fills such a record in with the dog's real name and details
instead of creating a second pet, so the appointment booked by buttons stays on the one dog.

An explicit column, not a naming rule: a customer may call a dog anything, and the mark must clear in
the same statement that renames the dog (conversation state is rewritten by the engine's turn).

Existing pets are not placeholders.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pet", schema=None) as batch_op:
        batch_op.add_column(sa.Column("placeholder", sa.Boolean(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("pet", schema=None) as batch_op:
        batch_op.drop_column("placeholder")
