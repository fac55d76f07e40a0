"""The cost report's hourly roll-up (``report_hours``) and per-task charges (``report_tasks``), kept by
triggers on ``spend`` and ``attempts``, filled from the rows already there (store/report_hours.py).

The trigger and backfill SQL comes from store/report_hours.py: a later change to what a fact is comes with a
migration that drops the triggers, creates them anew and rebuilds the table (``drop_triggers``,
``create_triggers``, ``rebuild``).

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from store.report_hours import KEYS, SUMS, TABLE, TASKS_TABLE, create_triggers, drop_triggers, rebuild

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY_TYPES = {"hour": sa.DateTime(timezone=True), "env": sa.String(32), "stage": sa.String(32)}
KEY_TYPES |= {"group": sa.String(32), "kind": sa.String(16), "provider": sa.String(32), "model": sa.String(64)}


def upgrade() -> None:
    op.create_table(
        TABLE,
        *(sa.Column(key, KEY_TYPES[key], nullable=False) for key in KEYS),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in SUMS),
        sa.PrimaryKeyConstraint(*KEYS, name=op.f(f"pk_{TABLE}")),
    )
    op.create_table(
        TASKS_TABLE,
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name=op.f(f"pk_{TASKS_TABLE}")),
    )
    op.create_index("ix_report_tasks_created_cost", TASKS_TABLE, ["created_at", "cost_micros"], unique=False)
    conn = op.get_bind()
    create_triggers(conn)
    rebuild(conn)


def downgrade() -> None:
    drop_triggers(op.get_bind())
    op.drop_index("ix_report_tasks_created_cost", table_name=TASKS_TABLE)
    op.drop_table(TASKS_TABLE)
    op.drop_table(TABLE)
