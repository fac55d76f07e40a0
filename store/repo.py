"""The write side of the store: plain functions that take a :class:`Session` first and keyword-only arguments.

Every function flushes and never commits: the caller's ``session_scope`` decides. State changes that must
happen once (claim, finish, count an attempt, charge) are conditional UPDATEs or ``INSERT ... ON CONFLICT``
statements, so they stay exactly-once when a redelivered task runs the same code twice, also in two processes
at the same moment, on SQLite and on PostgreSQL alike. Nothing here takes or stores a secret.

A function that names a task which does not exist raises :class:`switchyard.errors.NotFound`.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Executable, Update, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store import outbox
from store.models import (
    TERMINAL_STATUSES,
    Attempt,
    Base,
    Environment,
    Group,
    Result,
    Spend,
    Stage,
    Task,
    TaskAction,
    utcnow,
)
from switchyard.errors import NotFound
from switchyard.fleet import Fleet
from switchyard.logs import mask, mask_data
from switchyard.usage import Usage

M = TypeVar("M", bound=Base)

CLAIMABLE = ("queued", "deferred")
ATTEMPT_VERDICTS = ("succeeded", "failed")
ATTEMPT_OUTCOMES = ("answered", *ATTEMPT_VERDICTS)


# --- helpers -------------------------------------------------------------------------------------------


def _changed(session: Session, statement: Update) -> bool:
    """Run a conditional UPDATE; True when it matched a row. Callers re-select to refresh session objects."""
    result = session.execute(statement, execution_options={"synchronize_session": False})
    return bool(cast(CursorResult[Any], result).rowcount)


def _fresh(session: Session, model: type[M], *where: Any) -> M | None:
    """The row as the database has it now, replacing any stale copy in the session's identity map."""
    statement = select(model).where(*where).execution_options(populate_existing=True)
    return session.execute(statement).scalar_one_or_none()


def _one(session: Session, model: type[M], *where: Any) -> M:
    statement = select(model).where(*where).execution_options(populate_existing=True)
    return session.execute(statement).scalar_one()


def _upsert(session: Session, model: type[Base], values: dict[str, Any], keys: list[str], update: list[str]) -> None:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE SET <update>``; ``DO NOTHING`` when ``update`` is empty."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(_on_conflict(postgresql.insert(model).values(values), keys, update))
    elif dialect == "sqlite":
        session.execute(_on_conflict(sqlite.insert(model).values(values), keys, update))
    else:
        raise NotImplementedError(f"the store supports sqlite and postgresql, not {dialect}")


def _on_conflict(insert: postgresql.Insert | sqlite.Insert, keys: list[str], update: list[str]) -> Executable:
    if not update:
        return insert.on_conflict_do_nothing(index_elements=keys)
    return insert.on_conflict_do_update(index_elements=keys, set_={name: insert.excluded[name] for name in update})


def _require_task(session: Session, task_id: str) -> Task:
    task = _fresh(session, Task, Task.id == task_id)
    if task is None:
        raise NotFound(f"no task {task_id!r}")
    return task


# --- tasks ---------------------------------------------------------------------------------------------


def create_task(
    session: Session,
    *,
    task_id: str,
    kind: str,
    group: str,
    environment: str,
    stage: str,
    title: str,
    payload: dict[str, Any],
    parent_id: str | None = None,
) -> Task:
    task = Task(
        id=task_id,
        kind=kind,
        group=group,
        environment=environment,
        stage=stage,
        status="queued",
        title=mask(title),  # a key pasted into a title or description never reaches a row (switchyard/logs.py)
        payload=mask_data(payload),
        parent_id=parent_id,
    )
    session.add(task)
    session.flush()
    return task


def get_task(session: Session, task_id: str) -> Task | None:
    return _fresh(session, Task, Task.id == task_id)


def claim_task(session: Session, *, task_id: str) -> Task | None:
    """Move a queued or deferred task to running. A task already running (its worker died and the broker
    redelivered it) is returned as it is, so the attempt loop resumes; a terminal one gives None."""
    _changed(
        session,
        update(Task)
        .where(Task.id == task_id, Task.status.in_(CLAIMABLE))
        .values(status="running", started_at=func.coalesce(Task.started_at, utcnow()), reason=None),
    )
    task = _require_task(session, task_id)
    return None if task.status in TERMINAL_STATUSES else task


def _masked(text: str | None) -> str | None:
    """An error or reason as stored: a provider's error body may quote a key or a URL with a password."""
    return None if text is None else mask(text)


def finish_task(
    session: Session,
    *,
    task_id: str,
    status: str,
    reason: str | None = None,
    provider: str | None = None,
    model: str | None = None,
    transport: str | None = None,
) -> bool:
    """Give the task its one terminal status, with cost = the sum of its charges. False (and nothing
    changed) when it had one already."""
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"status {status!r} is not terminal; use one of {', '.join(TERMINAL_STATUSES)}")
    charged = select(func.coalesce(func.sum(Spend.charged_micros), 0)).where(Spend.task_id == task_id)
    route = {"provider": provider, "model": model, "transport": transport}
    finished = _changed(
        session,
        update(Task)
        .where(Task.id == task_id, Task.status.not_in(TERMINAL_STATUSES))
        .values(
            status=status,
            reason=None if reason is None else mask(reason),
            finished_at=utcnow(),
            cost_micros=charged.scalar_subquery(),
            **{name: value for name, value in route.items() if value is not None},
        ),
    )
    _require_task(session, task_id)
    if finished:  # its follow-ups are owed in the same transaction as the status (store/outbox.py)
        outbox.add(session, task_id=task_id, action=outbox.FOLLOW_UPS)
    return finished


def record_action(
    session: Session,
    *,
    task_id: str,
    action: str,
    from_status: str,
    from_reason: str | None,
    before: dict[str, Any] | None,
    by: str,
) -> None:
    """One retry or cancel of a task (tasks/actions.py), with what the task was before it."""
    session.add(
        TaskAction(
            task_id=task_id,
            action=action,
            from_status=from_status,
            from_reason=from_reason,
            before=before or {},
            by=by[:32],
        )
    )
    session.flush()


def set_deferred(session: Session, *, task_id: str, reason: str) -> None:
    """Park an active task until its countdown ends; a terminal task is left as it is."""
    _changed(
        session,
        update(Task)
        .where(Task.id == task_id, Task.status.not_in(TERMINAL_STATUSES))
        .values(status="deferred", reason=mask(reason)),
    )
    _require_task(session, task_id)


def mark_lost(session: Session, *, older_than: datetime) -> list[str]:
    """Ids of tasks running since before ``older_than`` (naive means UTC), oldest first. Changes nothing:
    a sweeper decides whether to redeliver or fail them."""
    cutoff = older_than if older_than.tzinfo else older_than.replace(tzinfo=UTC)
    statement = (
        select(Task.id)
        .where(Task.status == "running", Task.started_at < cutoff.astimezone(UTC))
        .order_by(Task.started_at)
    )
    return list(session.scalars(statement))


# --- attempts and the ledger ---------------------------------------------------------------------------


def stored_attempt(session: Session, *, task_id: str, attempt: int) -> Attempt | None:
    return _fresh(session, Attempt, Attempt.task_id == task_id, Attempt.attempt == attempt)


def attempts_of(session: Session, *, task_id: str, statuses: tuple[str, ...] | None = None) -> list[Attempt]:
    """The task's attempts in order, optionally only those with one of ``statuses``."""
    statement = select(Attempt).where(Attempt.task_id == task_id).order_by(Attempt.attempt)
    if statuses is not None:
        statement = statement.where(Attempt.status.in_(statuses))
    return list(session.scalars(statement))


def last_attempt_number(session: Session, *, task_id: str) -> int:
    """The highest attempt number the task has used (0 before its first attempt)."""
    found = session.scalar(select(func.max(Attempt.attempt)).where(Attempt.task_id == task_id))
    return int(found or 0)


def begin_attempt(
    session: Session,
    *,
    task_id: str,
    attempt: int,
    provider: str,
    model: str,
    transport: str,
    route_note: str | None = None,
) -> Attempt:
    """Insert the attempt as running; a redelivery (or a racing duplicate) gets the stored row unchanged.

    ``INSERT ... ON CONFLICT DO NOTHING`` instead of catching IntegrityError in a SAVEPOINT: same outcome,
    and no SAVEPOINT, which pysqlite turns into an early commit when no explicit BEGIN preceded it. On
    PostgreSQL a racing insert waits for the other transaction, then does nothing; the select that follows
    (read committed) sees the winner's row. On SQLite the racer waits for the write lock instead."""
    existing = stored_attempt(session, task_id=task_id, attempt=attempt)
    if existing is not None:
        return existing
    _require_task(session, task_id)
    row = {
        "task_id": task_id,
        "attempt": attempt,
        "provider": provider,
        "model": model,
        "transport": transport,
        "route_note": route_note,
        "status": "running",
        "started_at": utcnow(),
    }
    _upsert(session, Attempt, row, keys=["task_id", "attempt"], update=[])
    return _one(session, Attempt, Attempt.task_id == task_id, Attempt.attempt == attempt)


def finish_attempt(
    session: Session,
    *,
    task_id: str,
    attempt: int,
    status: str,
    usage: Usage | None = None,
    cost_micros: int = 0,
    price_version: str | None = None,
    answer: str | None = None,
    error_class: str | None = None,
    error: str | None = None,
    latency_ms: float = 0.0,
) -> Attempt:
    """Record an attempt's outcome. The allowed moves:

        running            -> answered             the provider answered and was charged; the stored answer
                                                   lets a redelivery act on it without calling again
        running | answered -> succeeded | failed  the verdict

    The move out of ``running`` writes every field and counts the attempt on its task (once). The move out of
    ``answered`` writes only the verdict (status, error_class, error): usage, cost and answer stay as
    recorded. Any other move (a redelivered finish) changes nothing; the stored row is returned."""
    if status not in ATTEMPT_OUTCOMES:
        raise ValueError(f"attempt status {status!r} must be one of {', '.join(ATTEMPT_OUTCOMES)}")
    verdict = {"status": status, "error_class": error_class, "error": _masked(error), "finished_at": utcnow()}
    call = {
        **asdict(usage or Usage()),  # the token columns are named as Usage's fields
        "cost_micros": cost_micros,
        "price_version": price_version,
        "answer": answer,
        "latency_ms": latency_ms,
    }
    where = (Attempt.task_id == task_id, Attempt.attempt == attempt)
    if _changed(session, update(Attempt).where(*where, Attempt.status == "running").values(**verdict, **call)):
        _changed(session, update(Task).where(Task.id == task_id).values(attempts=Task.attempts + 1))
        _fresh(session, Task, Task.id == task_id)
    elif status in ATTEMPT_VERDICTS:
        _changed(session, update(Attempt).where(*where, Attempt.status == "answered").values(**verdict))
    stored = _fresh(session, Attempt, *where)
    if stored is None:
        raise NotFound(f"task {task_id!r} has no attempt {attempt}; begin_attempt first")
    return stored


# --- results, environments, groups ---------------------------------------------------------------------


def upsert_result(
    session: Session,
    *,
    environment: str,
    stage: str,
    task_id: str,
    kind: str,
    status: str,
    summary: str,
    data: dict[str, Any],
) -> Result:
    row = {
        "environment": environment,
        "stage": stage,
        "task_id": task_id,
        "kind": kind,
        "status": status,
        "summary": summary,
        "data": data,
        "updated_at": utcnow(),
    }
    _require_task(session, task_id)
    _upsert(
        session,
        Result,
        row,
        keys=["environment", "stage", "task_id"],
        update=["kind", "status", "summary", "data", "updated_at"],
    )
    where = (Result.environment == environment, Result.stage == stage, Result.task_id == task_id)
    return _one(session, Result, *where)


def upsert_environment(
    session: Session,
    *,
    name: str,
    path: str,
    branch: str,
    port: int,
    check_command: str,
    repository: str,
    stages: list[tuple[str, str]],
) -> Environment:
    """Insert or update the environment and replace its stages with ``stages`` ((name, branch), in order).
    The upsert locks the environment's row first, so two processes doing this serialize on PostgreSQL."""
    row = {
        "name": name,
        "path": path,
        "branch": branch,
        "port": port,
        "check_command": check_command,
        "repository": repository,
        "created_at": utcnow(),
    }
    _upsert(
        session,
        Environment,
        row,
        keys=["name"],
        update=["path", "branch", "port", "check_command", "repository"],
    )
    for old in session.scalars(select(Stage).where(Stage.environment == name)).all():
        session.delete(old)
    session.flush()
    session.add_all(
        Stage(environment=name, name=stage, position=position, branch=stage_branch)
        for position, (stage, stage_branch) in enumerate(stages)
    )
    session.flush()
    return _one(session, Environment, Environment.name == name)


def sync_groups(session: Session, fleet: Fleet) -> None:
    """Make the groups table equal to the fleet file's groups: upsert each, delete those it no longer has."""
    names = [group.name for group in fleet.groups]
    for group in fleet.groups:
        row = {
            "name": group.name,
            "queue": group.queue,
            "sessions": group.sessions,
            "kinds": list(group.kinds),
            "ladder": list(group.ladder),
        }
        _upsert(session, Group, row, keys=["name"], update=["queue", "sessions", "kinds", "ladder"])
    for gone in session.scalars(select(Group).where(Group.name.not_in(names))).all():
        session.delete(gone)
    session.flush()
    session.scalars(select(Group).execution_options(populate_existing=True)).all()  # refresh session copies
