"""Budget ledger: counters per budget window, operator overrides, alerts; spend rows remember what they held.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def _budget_key() -> list[sa.Column[str]]:
    return [
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("target", sa.String(32), nullable=False),
        sa.Column("window", sa.String(8), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "budget_counters",
        *_budget_key(),
        sa.Column("window_start", TZ, nullable=False),
        sa.Column("used_micros", sa.BigInteger(), nullable=False),
        sa.Column("held_micros", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "target", "window", "window_start", name=op.f("pk_budget_counters")),
    )
    op.create_table(
        "budget_overrides",
        *_budget_key(),
        sa.Column("cap_micros", sa.BigInteger(), nullable=False),
        sa.Column("alert_micros", sa.BigInteger(), nullable=True),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("scope", "target", "window", name=op.f("pk_budget_overrides")),
    )
    op.create_table(
        "budget_alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        *_budget_key(),
        sa.Column("window_start", TZ, nullable=False),
        sa.Column("used_micros", sa.BigInteger(), nullable=False),
        sa.Column("alert_micros", sa.BigInteger(), nullable=False),
        sa.Column("cap_micros", sa.BigInteger(), nullable=False),
        sa.Column("task_id", sa.String(36), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_alerts")),
        sa.UniqueConstraint("scope", "target", "window", "window_start", name="uq_budget_alerts_window"),
    )
    with op.batch_alter_table("spend") as batch:
        batch.add_column(sa.Column("budget_keys", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("spend") as batch:
        batch.drop_column("budget_keys")
    op.drop_table("budget_alerts")
    op.drop_table("budget_overrides")
    op.drop_table("budget_counters")
