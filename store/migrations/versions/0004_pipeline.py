"""The PR pipeline: task dependencies, reviews, merges and check outcomes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def _task_fk(table: str, column: str, ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], ["tasks.id"], name=op.f(f"fk_{table}_{column}_tasks"), ondelete=ondelete)


def upgrade() -> None:
    op.create_table(
        "task_deps",
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("depends_on", sa.String(36), nullable=False),
        _task_fk("task_deps", "task_id"),
        _task_fk("task_deps", "depends_on"),
        sa.PrimaryKeyConstraint("task_id", "depends_on", name=op.f("pk_task_deps")),
    )
    op.create_index(op.f("ix_task_deps_depends_on"), "task_deps", ["depends_on"])
    _create_reviews()
    _create_merges()


def _create_reviews() -> None:
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("impl_task_id", sa.String(36), nullable=True),
        sa.Column("environment", sa.String(32), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("branch", sa.String(255), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(32), nullable=False),
        sa.Column("verdict", sa.String(20), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("comments", sa.JSON(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        _task_fk("reviews", "task_id"),
        _task_fk("reviews", "impl_task_id", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
        sa.UniqueConstraint("task_id", name="uq_reviews_task"),
    )
    op.create_index(op.f("ix_reviews_impl_task_id"), "reviews", ["impl_task_id"])


def _create_merges() -> None:
    op.create_table(
        "merges",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("environment", sa.String(32), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("branch", sa.String(255), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("base_sha", sa.String(64), nullable=True),
        sa.Column("merge_sha", sa.String(64), nullable=True),
        sa.Column("conflict_files", sa.JSON(), nullable=False),
        sa.Column("resolved_by", sa.String(32), nullable=True),
        sa.Column("check_passed", sa.Boolean(), nullable=True),
        sa.Column("check", sa.JSON(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        _task_fk("merges", "task_id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merges")),
        sa.UniqueConstraint("task_id", name="uq_merges_task"),
    )
    op.create_index(op.f("ix_merges_environment"), "merges", ["environment"])


def downgrade() -> None:
    op.drop_index(op.f("ix_merges_environment"), table_name="merges")
    op.drop_table("merges")
    op.drop_index(op.f("ix_reviews_impl_task_id"), table_name="reviews")
    op.drop_table("reviews")
    op.drop_index(op.f("ix_task_deps_depends_on"), table_name="task_deps")
    op.drop_table("task_deps")
