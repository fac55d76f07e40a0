"""The write side of the PR pipeline's rows: task dependencies, held tasks, reviews and merges.

Same rules as :mod:`store.repo`: a session first, keyword-only arguments, flush and never commit. A task
that waits for its dependencies is *held*: ``deferred`` with a reason starting with :data:`HELD`, and no
broker message yet. Releasing it is a conditional UPDATE, so exactly one caller sends its message.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from store.models import TERMINAL_STATUSES, Merge, Outbox, Result, Review, Task, TaskDependency, utcnow
from store.repo import _changed, _fresh, _one, _require_task, _upsert

HELD = "held until its dependencies finish"
LANDING = "held until its sub-tasks land"  # a plan whose sub-tasks were submitted (tasks/plans.py)
NO_MESSAGE = (HELD, LANDING)  # reasons of a deferred task that has no broker message on purpose
AUTHOR_KINDS = ("pr_impl", "dev_task")
MAX_SUBTREE = 2000


# --- dependencies --------------------------------------------------------------------------------------


def lock_dependents(session: Session, task_id: str) -> None:
    """On PostgreSQL, a transaction lock on the list of ``task_id``'s dependents: a task that finishes and looks
    for its dependents in the same transaction (:func:`tasks.pipeline.nothing_follows`) and a submission that
    adds one take turns, so either the finishing task sees the new dependent or the submission, settling its
    task after its commit, sees the dependency finished. SQLite needs none: its writers take turns already."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"dependents:{task_id}"))))


def add_dependencies(session: Session, *, task_id: str, depends_on: list[str]) -> None:
    """Record that ``task_id`` runs after each of ``depends_on`` (repeating an edge changes nothing)."""
    for dependency in sorted(set(depends_on)):  # in one order: two submissions never wait for each other
        lock_dependents(session, dependency)
    for dependency in dict.fromkeys(depends_on):
        _upsert(session, TaskDependency, {"task_id": task_id, "depends_on": dependency}, ["task_id", "depends_on"], [])


def dependencies_of(session: Session, task_id: str) -> list[Task]:
    """The tasks ``task_id`` depends on, oldest first, as the database has them now."""
    statement = (
        select(Task)
        .join(TaskDependency, TaskDependency.depends_on == Task.id)
        .where(TaskDependency.task_id == task_id)
        .order_by(Task.created_at, Task.id)
        .execution_options(populate_existing=True)
    )
    return list(session.scalars(statement))


def dependents_of(session: Session, task_id: str) -> list[str]:
    """Ids of the tasks that depend on ``task_id``, oldest first."""
    statement = (
        select(Task.id)
        .join(TaskDependency, TaskDependency.task_id == Task.id)
        .where(TaskDependency.depends_on == task_id)
        .order_by(Task.created_at, Task.id)
    )
    return list(session.scalars(statement))


def _held(task_id: str) -> tuple[Any, ...]:
    return (Task.id == task_id, Task.status == "deferred", Task.reason.like(f"{HELD}%"))


def lock_held(session: Session, *, task_id: str) -> Task | None:
    """Lock a held task's row for this transaction (a no-op UPDATE), so deciding its fate is serialized;
    None when it is not held (already released, running or finished)."""
    if not _changed(session, update(Task).where(*_held(task_id)).values(status=Task.status)):
        return None
    return _fresh(session, Task, Task.id == task_id)


def release_held(session: Session, *, task_id: str, payload: dict[str, Any]) -> bool:
    """Move a held task to ``queued`` with ``payload``; True for the one caller that did it."""
    return _changed(session, update(Task).where(*_held(task_id)).values(status="queued", reason=None, payload=payload))


def lock_task(session: Session, *, task_id: str) -> Task:
    """Lock the task's row for this transaction, so read-decide-write on what hangs off it is serialized."""
    _changed(session, update(Task).where(Task.id == task_id).values(status=Task.status))
    return _require_task(session, task_id)


def children_of(session: Session, task_id: str) -> list[Task]:
    statement = select(Task).where(Task.parent_id == task_id).order_by(Task.created_at, Task.id)
    return list(session.scalars(statement.execution_options(populate_existing=True)))


def park_plan(
    session: Session, *, task_id: str, provider: str | None, model: str | None, transport: str | None
) -> bool:
    """A plan whose sub-tasks are submitted waits, with no lease and no message, until they land; True when
    this call parked it (False: it is parked or finished already)."""
    route = {"provider": provider, "model": model, "transport": transport}
    statement = (
        update(Task)
        .where(Task.id == task_id, Task.status.not_in(TERMINAL_STATUSES))
        .values(
            status="deferred",
            reason=LANDING,
            lease_owner=None,
            lease_until=None,
            **{name: value for name, value in route.items() if value is not None},
        )
    )
    return _changed(session, statement)


def is_landing(task: Task) -> bool:
    return task.status == "deferred" and (task.reason or "").startswith(LANDING)


def landing_plans(session: Session, *, limit: int = 100) -> list[str]:
    """Ids of the plans parked until their sub-tasks land, oldest first."""
    statement = (
        select(Task.id)
        .where(Task.kind == "plan", Task.status == "deferred", Task.reason.like(f"{LANDING}%"))
        .order_by(Task.created_at, Task.id)
        .limit(limit)
    )
    return list(session.scalars(statement))


def nearest_plan(session: Session, task_id: str) -> str | None:
    """The closest plan above ``task_id`` in its chain (following ``parent_id`` up), or None."""
    node = session.get(Task, task_id)
    for _ in range(50):
        if node is None or node.parent_id is None:
            return None
        node = session.get(Task, node.parent_id)
        if node is not None and node.kind == "plan":
            return node.id
    return None


def subtree(session: Session, task_id: str) -> list[Task]:
    """Every task below ``task_id`` (children, their follow-ups, ...), breadth first, read afresh."""
    found: list[Task] = []
    level = [task_id]
    while level and len(found) < MAX_SUBTREE:
        statement = select(Task).where(Task.parent_id.in_(level)).order_by(Task.created_at, Task.id)
        kids = list(session.scalars(statement.execution_options(populate_existing=True)))
        found.extend(kids)
        level = [kid.id for kid in kids]
    return found


def follow_ups_owed(session: Session, task_ids: list[str]) -> set[str]:
    """Which of these tasks still owe their follow-ups (finished, but what follows them is not made yet)."""
    statement = select(Outbox.task_id).where(
        Outbox.task_id.in_(task_ids), Outbox.action == "follow_ups", Outbox.sent_at.is_(None)
    )
    return set(session.scalars(statement))


def branches_of(session: Session, task_ids: list[str]) -> list[str]:
    """The branches these tasks committed to (their succeeded results say), in their order, each once."""
    found: dict[str, str] = {}
    for result in session.scalars(select(Result).where(Result.task_id.in_(task_ids), Result.status == "succeeded")):
        if result.data.get("branch"):
            found[result.task_id] = str(result.data["branch"])
    return list(dict.fromkeys(found[i] for i in task_ids if i in found))


def hold_task(session: Session, *, task_id: str, waiting_for: list[str]) -> None:
    """Mark a just-created task as held until ``waiting_for`` finish (no message is sent for it yet)."""
    reason = f"{HELD}: {', '.join(i[:8] for i in waiting_for)}"
    _changed(
        session,
        update(Task).where(Task.id == task_id, Task.status == "queued").values(status="deferred", reason=reason),
    )


# --- the merge queue -----------------------------------------------------------------------------------


def integrations_ahead(session: Session, *, task: Task) -> list[Task]:
    """pr_integ tasks for the same environment and stage submitted before ``task`` that are not finished."""
    earlier = (Task.created_at < task.created_at) | ((Task.created_at == task.created_at) & (Task.id < task.id))
    statement = (
        select(Task)
        .where(
            Task.kind == "pr_integ",
            Task.environment == task.environment,
            Task.stage == task.stage,
            Task.status.not_in(TERMINAL_STATUSES),
            Task.id != task.id,
            earlier,
        )
        .order_by(Task.created_at, Task.id)
    )
    return list(session.scalars(statement))


def branch_author(session: Session, *, environment: str, branch: str) -> str | None:
    """The provider that wrote the latest succeeded pr_impl/dev_task commit on ``branch``, if one did."""
    statement = (
        select(Result)
        .where(Result.environment == environment, Result.kind.in_(AUTHOR_KINDS), Result.status == "succeeded")
        .order_by(Result.updated_at.desc(), Result.id.desc())
        .limit(500)
    )
    for result in session.scalars(statement):
        if result.data.get("branch") == branch and result.data.get("author"):
            return str(result.data["author"])
    return None


# --- reviews and merges --------------------------------------------------------------------------------


def record_review(
    session: Session,
    *,
    task_id: str,
    impl_task_id: str | None,
    environment: str,
    stage: str,
    branch: str,
    round: int,
    reviewer: str,
    verdict: str,
    summary: str,
    comments: list[dict[str, Any]],
) -> Review:
    """Store (or, for a redelivered review, replace) the verdict of review task ``task_id``."""
    row = {
        "task_id": task_id,
        "impl_task_id": impl_task_id,
        "environment": environment,
        "stage": stage,
        "branch": branch,
        "round": round,
        "reviewer": reviewer,
        "verdict": verdict,
        "summary": summary,
        "comments": comments,
        "created_at": utcnow(),
    }
    _require_task(session, task_id)
    _upsert(session, Review, row, ["task_id"], ["reviewer", "verdict", "summary", "comments"])
    return _one(session, Review, Review.task_id == task_id)


MERGE_FIELDS = (
    "status", "base_sha", "merge_sha", "conflict_files", "resolved_by", "check_passed", "check", "updated_at",
)  # fmt: skip


def record_merge(
    session: Session,
    *,
    task_id: str,
    environment: str,
    stage: str,
    branch: str,
    target: str,
    status: str,
    base_sha: str | None = None,
    merge_sha: str | None = None,
    conflict_files: list[str] | None = None,
    resolved_by: str | None = None,
    check: dict[str, Any] | None = None,
) -> Merge:
    """Insert or update the merge record of integration task ``task_id`` (one row per task)."""
    now = utcnow()
    row = {
        "task_id": task_id,
        "environment": environment,
        "stage": stage,
        "branch": branch,
        "target": target,
        "status": status,
        "base_sha": base_sha,
        "merge_sha": merge_sha,
        "conflict_files": conflict_files or [],
        "resolved_by": resolved_by,
        "check_passed": None if check is None else bool(check.get("passed")),
        "check": check or {},
        "created_at": now,
        "updated_at": now,
    }
    _require_task(session, task_id)
    _upsert(session, Merge, row, ["task_id"], list(MERGE_FIELDS))
    return _one(session, Merge, Merge.task_id == task_id)


def merge_of(session: Session, task_id: str) -> Merge | None:
    return _fresh(session, Merge, Merge.task_id == task_id)
