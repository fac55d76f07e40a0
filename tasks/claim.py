"""Taking a task for a run, and picking up what a worker that died left behind.

A redelivered task can find an attempt still ``running`` (the worker died during the call: the call's fate
is unknown, so the attempt is closed as failed and its hold released) or ``answered`` (the provider answered
and was charged, then the worker died before the handler finished: the stored answer is acted on again, with
no second call and no second charge).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from routing.route import Route
from store import repo
from store.db import session_scope
from store.models import TERMINAL_STATUSES, Environment, Result, Task
from store.queries import as_utc
from tasks.context import Context
from tasks.kinds.base import Answer, Outcome, TaskInfo
from tasks.schemas import SubmitRequest

log = logging.getLogger(__name__)
LOST = "the worker was lost during the call; its outcome is unknown"


class Releases(Protocol):
    def release(self, *, task_id: str, attempt: int, reason: str) -> object: ...

    def settle(self, *, task_id: str, attempt: int, charged_micros: int, price_version: str | None) -> None: ...


def claim(ctx: Context, task_id: str) -> TaskInfo | None:
    """The task as handlers see it, now ``running``; None when it already has its terminal status."""
    with session_scope(ctx.database_url) as session:
        row = repo.claim_task(session, task_id=task_id)
        return None if row is None else _info(ctx, session, row)


def _info(ctx: Context, session: Session, row: Task) -> TaskInfo:
    env = session.get(Environment, row.environment)
    workspace = Path(env.path).parent if env else ctx.settings.workspace_dir
    request = SubmitRequest.model_validate(row.payload)
    return TaskInfo(
        row.id, row.kind, row.group, row.environment, row.stage, request, workspace, created_at=as_utc(row.created_at)
    )


def finished_task(ctx: Context, task_id: str) -> tuple[TaskInfo, str, Outcome | None] | None:
    """A terminal task with its status and stored outcome (for follow-ups of a redelivery); None if unknown."""
    with session_scope(ctx.database_url) as session:
        row = repo.get_task(session, task_id)
        if row is None or row.status not in TERMINAL_STATUSES:
            return None
        info = _info(ctx, session, row)
        result = session.scalar(select(Result).where(Result.task_id == task_id, Result.stage == row.stage))
        outcome = Outcome(result.summary, dict(result.data), result.status) if result is not None else None
        return info, row.status, outcome


def recover(ctx: Context, task: TaskInfo, ledger: Releases) -> tuple[int, Route, Answer] | None:
    """Close attempts a dead worker left running; return the latest answered one to act on again, if any."""
    with session_scope(ctx.database_url) as session:
        open_attempts = repo.attempts_of(session, task_id=task.id, statuses=("running", "answered"))
        lost = [a.attempt for a in open_attempts if a.status == "running"]
        answered = [a for a in open_attempts if a.status == "answered"]
        for number in lost:
            repo.finish_attempt(
                session, task_id=task.id, attempt=number, status="failed", error_class="WorkerLost", error=LOST
            )
        charged = [(a.attempt, a.cost_micros, a.price_version) for a in answered]
        latest = answered[-1] if answered else None
        resumed = None
        if latest is not None and latest.answer is not None:
            route = Route(latest.provider, latest.model, "cli" if latest.transport == "cli" else "api", 0, 0)
            resumed = (latest.attempt, route, Answer(latest.answer, latest.provider, latest.model, latest.transport))
    for number in lost:
        ledger.release(task_id=task.id, attempt=number, reason="worker lost")
        log.warning("task %s attempt %s: %s", task.id, number, LOST)
    for number, cost, version in charged:  # answered and priced, maybe not yet settled (idempotent)
        ledger.settle(task_id=task.id, attempt=number, charged_micros=cost, price_version=version)
    return resumed
