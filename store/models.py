"""SQLAlchemy models: every SQL table Switchyard owns is declared here, and only here.

Money is stored as integer micro-dollars (``*_micros``): exact sums in every database, no float drift.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
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

from store import names

TERMINAL_STATUSES = names.TERMINAL_STATUSES  # their home is store.names: importable without SQLAlchemy
ACTIVE_STATUSES = names.ACTIVE_STATUSES

MICROS = 1_000_000


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
        Index("ix_tasks_status_lease", "status", "lease_until"),
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
    # the lease (store/leases.py): who may run the task now, and until when unless renewed
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Attempt(Base):
    """One try of a task on one provider. The stored ``answer`` makes a redelivered attempt free."""

    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("task_id", "attempt", name="uq_attempts_task_attempt"),
        Index("ix_attempts_started", "started_at"),  # cost reports: attempts with no ledger row, by period
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(64))
    transport: Mapped[str] = mapped_column(String(8))
    route_note: Mapped[str | None] = mapped_column(Text, default=None)  # providers passed over, and why
    status: Mapped[str] = mapped_column(String(16))  # running, answered, succeeded, failed
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
        # cost reports: a budget's scope over a period, and the ledger's settled spend for a period
        Index("ix_spend_provider_created", "provider", "created_at"),
        Index("ix_spend_state_created", "state", "created_at"),
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
    # the budget counters a hold counted against ([scope, target, window, window start]; routing/ledger.py)
    budget_keys: Mapped[list[Any] | None] = mapped_column(JSON, default=None)


# --- routing: the budget ledger (routing/ledger.py) -------------------------------------------------------


class BudgetCounter(Base):
    """Money counted against one budget in one window: ``used`` = held + settled, ``held`` = still held.

    A hold raises ``used`` only while it stays within the cap (a conditional UPDATE), so concurrent holds
    can never pass it together; settling moves the counter of the window the hold was made in.
    """

    __tablename__ = "budget_counters"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    target: Mapped[str] = mapped_column(String(32), primary_key=True)
    window: Mapped[str] = mapped_column(String(8), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    used_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    held_micros: Mapped[int] = mapped_column(BigInteger, default=0)


class BudgetOverride(Base):
    """An operator's budget (``switchyard budget set``): replaces the fleet file's budget with the same key."""

    __tablename__ = "budget_overrides"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    target: Mapped[str] = mapped_column(String(32), primary_key=True)
    window: Mapped[str] = mapped_column(String(8), primary_key=True)
    cap_micros: Mapped[int] = mapped_column(BigInteger)
    alert_micros: Mapped[int | None] = mapped_column(BigInteger, default=None)
    action: Mapped[str] = mapped_column(String(8))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BudgetAlert(Base):
    """A budget's counter reached its alert threshold: recorded once per (budget key, window)."""

    __tablename__ = "budget_alerts"
    __table_args__ = (UniqueConstraint("scope", "target", "window", "window_start", name="uq_budget_alerts_window"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(32))
    window: Mapped[str] = mapped_column(String(8))
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_micros: Mapped[int] = mapped_column(BigInteger)
    alert_micros: Mapped[int] = mapped_column(BigInteger)
    cap_micros: Mapped[int] = mapped_column(BigInteger)
    task_id: Mapped[str | None] = mapped_column(String(36), default=None)  # the hold or charge that crossed it
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- routing: breaker transitions (routing/breaker.py) ----------------------------------------------------


class BreakerTransition(Base):
    """One change of a provider's shared breaker state, with its cause. Redis keeps only the last one."""

    __tablename__ = "breaker_transitions"
    __table_args__ = (Index("ix_breaker_transitions_provider_at", "provider", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str] = mapped_column(String(12))
    to_state: Mapped[str] = mapped_column(String(12))
    cause: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- environments: promotions (environments/promote.py) ---------------------------------------------------


class Promotion(Base):
    """One ``env promote``: the commit checked on the source stage and whether the target stage moved to it.

    ``status``: ``promoted``, ``up_to_date`` (nothing to move), ``check_failed``, ``not_fast_forward``."""

    __tablename__ = "promotions"
    __table_args__ = (Index("ix_promotions_env_stage", "environment", "to_stage"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    environment: Mapped[str] = mapped_column(String(32))
    from_stage: Mapped[str] = mapped_column(String(32))
    to_stage: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(20))
    source_sha: Mapped[str] = mapped_column(String(64))
    target_before: Mapped[str] = mapped_column(String(64))
    target_after: Mapped[str] = mapped_column(String(64))
    check: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # command, passed, exit_code, duration_s, output
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- what people did to a task (tasks/actions.py) ----------------------------------------------------------


class TaskAction(Base):
    """One ``tasks retry`` or ``tasks cancel`` (also by ``tasks resume``, or over HTTP): what the task was before,
    and for a retry the result its run had left (``before``: summary, data), kept so that nothing is lost."""

    __tablename__ = "task_actions"
    __table_args__ = (Index("ix_task_actions_task_at", "task_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(16))  # retry, cancel
    from_status: Mapped[str] = mapped_column(String(20))
    from_reason: Mapped[str | None] = mapped_column(Text, default=None)
    before: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    by: Mapped[str] = mapped_column(String(32), default="cli")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- the PR pipeline (tasks/pipeline.py, tasks/kinds/) -----------------------------------------------------


class TaskDependency(Base):
    """An edge of a task graph: ``task_id`` runs only once ``depends_on`` has succeeded (plans, --depends-on)."""

    __tablename__ = "task_deps"

    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    depends_on: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True, index=True)


class Review(Base):
    """A pr_review's verdict on a branch, with its file and line comments; ``impl_task_id`` is the pr_impl
    whose branch it reviewed when the review belongs to a pipeline chain."""

    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("task_id", name="uq_reviews_task"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    impl_task_id: Mapped[str | None] = mapped_column(
        ForeignKey("tasks.id", ondelete="SET NULL"), default=None, index=True
    )
    environment: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(32))
    branch: Mapped[str] = mapped_column(String(255))
    round: Mapped[int] = mapped_column(Integer, default=1)
    reviewer: Mapped[str] = mapped_column(String(32))
    verdict: Mapped[str] = mapped_column(String(20))  # approve, request_changes, comment
    summary: Mapped[str] = mapped_column(Text, default="")
    comments: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Merge(Base):
    """A pr_integ's merge into a stage branch: what was merged onto what, the check's outcome and the result.

    ``status``: ``merging`` (checked, the branch is being moved: a journal entry a redelivery finishes),
    ``merged``, ``already_merged``, ``conflict``, ``check_failed``, ``held`` (the provider declined)."""

    __tablename__ = "merges"
    __table_args__ = (UniqueConstraint("task_id", name="uq_merges_task"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(32), index=True)
    stage: Mapped[str] = mapped_column(String(32))
    branch: Mapped[str] = mapped_column(String(255))
    target: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20))
    base_sha: Mapped[str | None] = mapped_column(String(64), default=None)
    merge_sha: Mapped[str | None] = mapped_column(String(64), default=None)
    conflict_files: Mapped[list[Any]] = mapped_column(JSON, default=list)
    resolved_by: Mapped[str | None] = mapped_column(String(32), default=None)
    check_passed: Mapped[bool | None] = mapped_column(Boolean, default=None)
    check: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # command, exit_code, duration_s, output
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


# --- tasks: the tries inside an attempt (store/tries.py) --------------------------------------------------


class AttemptTry(Base):
    """One call of a provider inside an attempt (tenacity makes up to ``retry.attempts`` of them): when it
    started and ended, ``succeeded`` or ``failed``, and for a failure the error's class, HTTP status and text."""

    __tablename__ = "attempt_tries"
    __table_args__ = (Index("ix_attempt_tries_task_attempt", "task_id", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, ... within the attempt
    provider: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # succeeded, failed
    error_class: Mapped[str | None] = mapped_column(String(64), default=None)
    http_status: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Outbox(Base):
    """What Switchyard owes the broker, written in the transaction that creates the debt (store/outbox.py):
    ``send`` a task's message (with the task row, or when a held task is released), or run a finished task's
    ``follow_ups`` (with its terminal status). ``sent_at`` is set once it was done; until then a sender
    retries it, never turning a broker that is away into a terminal status."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "sent_at", "created_at"),)

    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    action: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    tries: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    resends: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)


# --- alerts (store/alerts.py; delivered by alerts/sender.py) ---------------------------------------------


class AlertRow(Base):
    """One alert, recorded once per cause (``dedupe_key``), in the transaction of the event where there is one,
    and delivered by a periodic sender, not by the task that caused it: ``pending`` until every alert URL took
    it (``delivered``), or ``failed`` after its last attempt, or ``unsent`` when no alert URL was configured.
    ``delivered_to`` fingerprints the URLs that took it already, so a retry sends only to the others; the
    URLs themselves are never stored. ``last_error`` is masked."""

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("dedupe_key", name="uq_alerts_dedupe_key"),
        Index("ix_alerts_due", "state", "next_try_at"),
        Index("ix_alerts_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cause: Mapped[str] = mapped_column(String(32))
    dedupe_key: Mapped[str] = mapped_column(String(255))
    title: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(12), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    delivered_to: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


# --- reports: the hourly roll-up (store/report_hours.py) ----------------------------------------------------


class ReportHour(Base):
    """The cost report's figures summed per UTC hour and key, kept by triggers on ``spend`` and ``attempts`` in
    the transaction that writes them (:mod:`store.report_hours`). One *fact* per ledger row (and per attempt
    with none); every column is a plain sum of the facts, so any grouping of hours adds up exactly."""

    __tablename__ = "report_hours"

    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    env: Mapped[str] = mapped_column(String(32), primary_key=True)
    stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    group: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    facts: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(BigInteger)
    tasks: Mapped[int] = mapped_column(BigInteger)
    succeeded: Mapped[int] = mapped_column(BigInteger)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_write_5m_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_write_1h_tokens: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger)
    compute_ms: Mapped[int] = mapped_column(BigInteger)
    cost_micros: Mapped[int] = mapped_column(BigInteger)
    unknown_cost_attempts: Mapped[int] = mapped_column(BigInteger)
    unknown_cost_micros: Mapped[int] = mapped_column(BigInteger)
    zero_cost_attempts: Mapped[int] = mapped_column(BigInteger)


class ReportTask(Base):
    """Each task's settled charges and ledger rows, kept by a trigger on ``spend`` (:mod:`store.report_hours`),
    with the task's creation time: the report's dearest tasks of a period without summing the ledger."""

    __tablename__ = "report_tasks"
    __table_args__ = (Index("ix_report_tasks_created_cost", "created_at", "cost_micros"),)

    task_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cost_micros: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(BigInteger)


# --- access control (store/tokens.py, store/audit.py; enforced by web/auth.py) ----------------------------


class ApiToken(Base):
    """A bearer token of the status API: only its SHA-256 (hex) is kept, never the token itself. ``scope`` is
    ``read``, ``submit`` or ``admin``; a revoked token keeps its row (``revoked_at``) so the audit reads it."""

    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),)

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(12))
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class AuditRow(Base):
    """One admin action: who (a token's name over HTTP, ``cli:<os user>`` from the CLI), what, with which
    arguments (masked: no secret is stored), and when."""

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_at", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    arguments: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
