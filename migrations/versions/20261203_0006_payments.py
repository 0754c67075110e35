"""Reserved for Stripe deposits (issue 12): a no-op until that change lands.

The revisions of work in progress are reserved in one chain up front, so parallel branches each fill
their own file and merge without re-linking revisions. An unfilled revision changes nothing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 14:00:00
"""

from collections.abc import Sequence

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
