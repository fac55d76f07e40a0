"""The read side: plain dicts ready for JSON, the dashboard and the CLI's tables.

Every function takes a session first and writes nothing. Money leaves as ``cost_usd`` floats (micros / 1e6)
for display, next to the exact integer ``*_micros`` where sums matter. Datetimes leave as ISO 8601 in UTC.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.chains import pipeline_detail
from store.holdings import stage_holdings
from store.models import ACTIVE_STATUSES, MICROS, Attempt, Environment, Result, Stage, Task, TaskAction
from store.tries import attach_tries
from switchyard.fleet import Fleet

Row = dict[str, Any]

TASK_FIELDS = (
    "id", "kind", "group", "environment", "stage", "status", "title", "provider", "model", "transport",
    "attempts", "reason", "parent_id",
)  # fmt: skip
ATTEMPT_FIELDS = (
    "attempt", "provider", "model", "transport", "status", "input_tokens", "cached_input_tokens",
    "cache_write_tokens", "cache_write_1h_tokens", "output_tokens", "reasoning_tokens", "compute_seconds",
    "price_version", "error_class", "error", "latency_ms", "route_note",
)  # fmt: skip


def usd(micros: int | None) -> float:
    """Micro-dollars as a float of dollars, for display only."""
    return (micros or 0) / MICROS


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite hands back naive datetimes, which are UTC by construction."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def task_row(task: Task) -> Row:
    row: Row = {name: getattr(task, name) for name in TASK_FIELDS}
    row.update(
        cost_usd=usd(task.cost_micros),
        cost_micros=task.cost_micros,
        created_at=iso(task.created_at),
        started_at=iso(task.started_at),
        finished_at=iso(task.finished_at),
    )
    return row


def list_tasks(
    session: Session,
    *,
    environment: str | None = None,
    stage: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    group: str | None = None,
    limit: int = 200,
) -> list[Row]:
    """Tasks newest first, filtered by any of the named columns."""
    query = select(Task)
    filters = {"environment": environment, "stage": stage, "kind": kind, "status": status, "group": group}
    for column, value in filters.items():
        if value is not None:
            query = query.where(getattr(Task, column) == value)
    query = query.order_by(Task.created_at.desc(), Task.id.desc()).limit(max(limit, 0))
    return [task_row(task) for task in session.scalars(query)]


def attempt_row(attempt: Attempt) -> Row:
    row: Row = {name: getattr(attempt, name) for name in ATTEMPT_FIELDS}
    row.update(
        cost_usd=usd(attempt.cost_micros),
        cost_micros=attempt.cost_micros,
        started_at=iso(attempt.started_at),
        finished_at=iso(attempt.finished_at),
    )
    return row


def result_row(result: Result) -> Row:
    return {
        "task_id": result.task_id,
        "environment": result.environment,
        "stage": result.stage,
        "kind": result.kind,
        "status": result.status,
        "summary": result.summary,
        "data": result.data,
        "updated_at": iso(result.updated_at),
    }


def _brief(task: Task) -> Row:
    return {"id": task.id, "kind": task.kind, "status": task.status, "title": task.title}


ID_PREFIX = re.compile(r"[0-9a-f-]{4,36}")


def resolve_task_id(session: Session, ref: str) -> str | None:
    """The full id of the task ``ref`` names: the id itself, or a prefix (like the 8 characters lists show)
    that exactly one task has. None when no task matches; ValueError listing them when several do."""
    if session.get(Task, ref) is not None:
        return ref
    if not ID_PREFIX.fullmatch(ref):  # ids are UUIDs: a prefix has no LIKE wildcards to escape
        return None
    matches = list(session.scalars(select(Task.id).where(Task.id.like(f"{ref}%")).limit(5)))
    if len(matches) > 1:
        raise ValueError(f"{ref!r} matches several tasks ({', '.join(matches)}); give more of the id")
    return matches[0] if matches else None


def task_detail(session: Session, task_id: str) -> Row | None:
    """One task with its payload, attempts, results, children and parent, and its pipeline: the chain it
    belongs to, its dependencies, the chain's reviews and merges (:func:`store.chains.pipeline_detail`)."""
    task = session.get(Task, task_id)
    if task is None:
        return None
    attempts = session.scalars(select(Attempt).where(Attempt.task_id == task_id).order_by(Attempt.attempt))
    result = session.scalars(
        select(Result).where(Result.task_id == task_id).order_by(Result.updated_at.desc()).limit(1)
    ).first()
    children = session.scalars(select(Task).where(Task.parent_id == task_id).order_by(Task.created_at, Task.id))
    parent = session.get(Task, task.parent_id) if task.parent_id else None
    detail = task_row(task)
    results = session.scalars(
        select(Result).where(Result.task_id == task_id).order_by(Result.environment, Result.stage)
    )
    detail.update(
        payload=task.payload,
        attempt_list=[attempt_row(a) for a in attempts],
        result=result_row(result) if result else None,
        results=[result_row(r) for r in results],  # one per (environment, stage)
        children=[_brief(child) for child in children],
        parent=_brief(parent) if parent else None,
        **pipeline_detail(session, task),
    )
    # ``attempts`` is the count in a list row; in the detail it is the list and the count is attempt_count.
    detail["attempt_count"] = detail["attempts"]
    detail["attempts"] = detail.pop("attempt_list")
    attach_tries(session, task_id, detail["attempts"])  # each attempt's provider calls (store/tries.py)
    detail["actions"] = actions_of(session, task_id)
    return detail


def actions_of(session: Session, task_id: str) -> list[Row]:
    """The retries and cancels done to a task, oldest first (tasks/actions.py)."""
    statement = select(TaskAction).where(TaskAction.task_id == task_id).order_by(TaskAction.at, TaskAction.id)
    return [
        {
            "action": a.action,
            "at": iso(a.at),
            "by": a.by,
            "from_status": a.from_status,
            "from_reason": a.from_reason,
            "before": a.before,
        }
        for a in session.scalars(statement)
    ]


def status_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Task.status, func.count()).group_by(Task.status))
    return {status: count for status, count in rows}


def group_counts(session: Session) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for group, status, count in session.execute(
        select(Task.group, Task.status, func.count()).group_by(Task.group, Task.status)
    ):
        counts[group][status] = count
    return dict(counts)


def group_status(session: Session, fleet: Fleet) -> list[Row]:
    """Per group of the fleet: queue, sessions, kinds, ladder with its models, and task counts by status."""
    counts = group_counts(session)
    rows = []
    for group in fleet.groups:
        by_status = counts.get(group.name, {})
        rows.append(
            {
                "name": group.name,
                "queue": group.queue,
                "sessions": group.sessions,
                "kinds": list(group.kinds),
                "ladder": list(group.ladder),
                "models": {p: fleet.model_for(group, p) for p in group.ladder},
                "counts": by_status,
                "active": sum(by_status.get(s, 0) for s in ACTIVE_STATUSES),
            }
        )
    return rows


def attempt_counts(session: Session) -> list[Row]:
    """Attempts by provider, status and error class (``None`` when the attempt did not fail)."""
    query = select(Attempt.provider, Attempt.status, Attempt.error_class, func.count()).group_by(
        Attempt.provider, Attempt.status, Attempt.error_class
    )
    return [
        {"provider": provider, "status": status, "error_class": error_class, "count": count}
        for provider, status, error_class, count in session.execute(query)
    ]


def _stage_counts(session: Session) -> dict[tuple[str, str], dict[str, int]]:
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    query = select(Task.environment, Task.stage, Task.status, func.count()).group_by(
        Task.environment, Task.stage, Task.status
    )
    for environment, stage, status, count in session.execute(query):
        counts[(environment, stage)][status] = count
    return counts


def _last_results(session: Session) -> dict[tuple[str, str], Row]:
    ranked = select(
        Result.id,
        func.row_number()
        .over(
            partition_by=(Result.environment, Result.stage),
            order_by=(Result.updated_at.desc(), Result.id.desc()),
        )
        .label("rank"),
    ).subquery()
    query = select(Result).join(ranked, ranked.c.id == Result.id).where(ranked.c.rank == 1)
    return {(r.environment, r.stage): result_row(r) for r in session.scalars(query)}


def stage_branch(environment: str, stage: str, first_stage: str) -> str:
    """``env/<name>`` for the first stage, ``env/<name>-<stage>`` for the others (DESIGN: vocabulary)."""
    return f"env/{environment}" if stage == first_stage else f"env/{environment}-{stage}"


def _environment_rows(session: Session, fleet: Fleet) -> list[Row]:
    known = {env.name: env for env in session.scalars(select(Environment))}
    stages: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for stage in session.scalars(select(Stage).order_by(Stage.environment, Stage.position)):
        stages[stage.environment].append((stage.name, stage.branch))
    config = fleet.environments
    names = list(config.names) + sorted(set(known) - set(config.names))
    rows: list[Row] = []
    for name in names:
        env = known.get(name)
        fallback = [(s, stage_branch(name, s, config.stages[0])) for s in config.stages]
        rows.append(
            {
                "name": name,
                "initialized": env is not None,
                "in_fleet": name in config.names,
                "path": env.path if env else None,
                "branch": env.branch if env else stage_branch(name, config.stages[0], config.stages[0]),
                "port": env.port if env else (config.port_for(name) if name in config.names else None),
                "stages": stages.get(name) or fallback,
            }
        )
    return rows


def environment_status(session: Session, fleet: Fleet) -> list[Row]:
    """Per environment (initialized, or only declared in the fleet) and stage: counts, the last result, and what
    the stage holds (commit, when and how it got there, from which task)."""
    counts = _stage_counts(session)
    last = _last_results(session)
    holds = stage_holdings(session)
    rows = _environment_rows(session, fleet)
    for row in rows:
        row["stages"] = [
            {
                "name": stage,
                "branch": branch,
                "counts": counts.get((row["name"], stage), {}),
                "last_result": last.get((row["name"], stage)),
                "holds": holds.get((row["name"], stage)),  # the commit its branch was last moved to (store/holdings.py)
            }
            for stage, branch in row["stages"]
        ]
        row["counts"] = _sum_counts(stage["counts"] for stage in row["stages"])
    return rows


def _sum_counts(parts: Any) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for part in parts:
        for status, count in part.items():
            total[status] += count
    return dict(total)
