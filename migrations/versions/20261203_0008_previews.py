"""Looking Glass previews (issue 11): `grooming_design` gains what a FAL image-edit job needs.

One row per generated image (one angle of one style for one pet). The job stores the FAL
`request_id` in `provider_request_id` before it polls, so a retried job resumes that request and never
submits twice (`status` "submitting" marks the one window where the outcome is unknown). The columns:
the client and conversation it is for (per-client daily limit, delivery), the style code and angle,
the model and seed used, its cost in USD (the monthly budget sums it), the photo it edited and the
storage keys of the results (FAL's URLs expire; ours do not), and when it was delivered. An index on
`provider_request_id` finds the row a webhook names; one on (client_id, created_at) counts a day's
previews.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("grooming_design", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client_id", _ID, nullable=True))
        batch_op.add_column(sa.Column("conversation_id", _ID, nullable=True))
        batch_op.add_column(sa.Column("style_code", sa.String(length=50), nullable=True))
        batch_op.add_column(sa.Column("angle", sa.String(length=10), server_default="front", nullable=False))
        batch_op.add_column(sa.Column("model", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("seed", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("cost_usd", sa.Float(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("photo_key", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("storage_keys", _JSON, server_default="[]", nullable=False))
        batch_op.add_column(sa.Column("batch_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_grooming_design_client_id_client"), "client", ["client_id"], ["id"], ondelete="CASCADE"
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_grooming_design_conversation_id_conversation"),
            "conversation",
            ["conversation_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_index(
            batch_op.f("ix_grooming_design_provider_request_id"), ["provider_request_id"], unique=False
        )
        batch_op.create_index("ix_grooming_design_client_created", ["client_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("grooming_design", schema=None) as batch_op:
        batch_op.drop_index("ix_grooming_design_client_created")
        batch_op.drop_index(batch_op.f("ix_grooming_design_provider_request_id"))
        batch_op.drop_constraint(batch_op.f("fk_grooming_design_conversation_id_conversation"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_grooming_design_client_id_client"), type_="foreignkey")
        for column in (
            "delivered_at",
            "batch_key",
            "storage_keys",
            "photo_key",
            "cost_usd",
            "seed",
            "model",
            "angle",
            "style_code",
            "conversation_id",
            "client_id",
        ):
            batch_op.drop_column(column)
