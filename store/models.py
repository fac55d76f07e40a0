"""SQLAlchemy models: every SQL table Switchyard owns is declared here, and only here.

Money is stored as integer micro-dollars (``*_micros``): exact sums in every database, no float drift.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MICROS = 1_000_000

TERMINAL_STATUSES = ("succeeded", "failed", "rejected", "budget_exhausted", "no_provider", "cancelled")
ACTIVE_STATUSES = ("queued", "running", "deferred")


def utcnow() -> datetime:
    return datetime.now(UTC)


# Every constraint gets a predictable name on every database, so later migrations can drop or alter it
# (SQLite batch mode needs the name to drop a foreign key). Explicit names (uq_attempts_...) are kept as-is.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Environment(Base):
    __tablename__ = "environments"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024))
    branch: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    check_command: Mapped[str] = mapped_column(String(1024), default="true")
    repository: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Stage(Base):
    __tablename__ = "stages"

    environment: Mapped[str] = mapped_column(ForeignKey("environments.name", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    branch: Mapped[str] = mapped_column(String(255))


class Group(Base):
    __tablename__ = "groups"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    queue: Mapped[str] = mapped_column(String(64))
    sessions: Mapped[int] = mapped_column(Integer)
    kinds: Mapped[list[Any]] = mapped_column(JSON)
    ladder: Mapped[list[Any]] = mapped_column(JSON)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_env_stage_status", "environment", "stage", "status"),
        Index("ix_tasks_group_status", "group", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    group: Mapped[str] = mapped_column(String(32))
    environment: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    title: Mapped[str] = mapped_column(String(200), default="")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("tasks.id"), default=None, index=True)
    provider: Mapped[str | None] = mapped_column(String(32), default=None)
    model: Mapped[str | None] = mapped_column(String(64), default=None)
    transport: Mapped[str | None] = mapped_column(String(8), default=None)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Attempt(Base):
    """One try of a task on one provider. The stored ``answer`` makes a redelivered attempt free."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("task_id", "attempt", name="uq_attempts_task_attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(64))
    transport: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))  # running, succeeded, failed
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_write_1h_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    compute_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    price_version: Mapped[str | None] = mapped_column(String(128), default=None)
    error_class: Mapped[str | None] = mapped_column(String(64), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    answer: Mapped[str | None] = mapped_column(Text, default=None)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Result(Base):
    """What a task produced, per (environment, stage): a verdict, a commit, a merge, sub-tasks."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("environment", "stage", "task_id", name="uq_results_env_stage_task"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    environment: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(32))
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(20))
    summary: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Spend(Base):
    """The ledger: one row per (task, attempt), a hold that settles to the real charge."""

    __tablename__ = "spend"
    __table_args__ = (
        UniqueConstraint("task_id", "attempt", name="uq_spend_task_attempt"),
        Index("ix_spend_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(64))
    group: Mapped[str] = mapped_column(String(32))
    environment: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(12))  # held, settled, released
    held_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    charged_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    price_version: Mapped[str | None] = mapped_column(String(128), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


# --- routing: the budget ledger (routing/ledger.py) -------------------------------------------------------


# --- routing: breaker transitions (routing/breaker.py) ----------------------------------------------------


# --- the PR pipeline (tasks/pipeline.py, tasks/kinds/) -----------------------------------------------------
