"""Reserved for performance indexes (issue 16): a no-op until that change lands.

The revisions of work in progress are reserved in one chain up front, so parallel branches each fill
their own file and merge without re-linking revisions. An unfilled revision changes nothing.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 14:00:00
"""

from collections.abc import Sequence

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
