"""Indexes for cost reports: attempts by start, the ledger by provider and by state over a period.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_attempts_started", "attempts", ["started_at"], unique=False)
    op.create_index("ix_spend_provider_created", "spend", ["provider", "created_at"], unique=False)
    op.create_index("ix_spend_state_created", "spend", ["state", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_spend_state_created", table_name="spend")
    op.drop_index("ix_spend_provider_created", table_name="spend")
    op.drop_index("ix_attempts_started", table_name="attempts")
