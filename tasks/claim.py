"""Taking a task for a run, and picking up what a worker that died left behind.

An attempt's row says how far its call got, and a redelivered task continues from it, so that every answered
call is charged exactly once:

    running    the call is open (the row is written before the call). Its worker died during the call, or
               after the answer arrived but before the database took it (it was away). Recovery looks for
               the answer parked in the state Redis (:mod:`routing.parked`): found, it is stored ``answered``
               at its real cost and settled, and the task acts on it. Not found, nobody can know whether the
               provider charged (a provider bills a request it processed even when the client went away), so
               the call is closed ``failed`` as ``UnknownCost``: charged at the amount held for it, flagged
               ``unknown cost`` in the ledger and the reports (:data:`store.costs.UNKNOWN_COST`), never at $0.
               Only a call whose hold was no longer held (never made, or released by the worker when the call
               failed) is closed as lost (``WorkerLost``) with nothing charged.
    answered   the answer and its cost are stored: the hold is settled (idempotent) and the stored answer is
               acted on again, with no second call. The questions the handler asked while acting on it
               (assists, later attempts) are answered again from their stored answers, in order, not called.
    succeeded  the verdict and the handler's outcome were stored together (the task's result row); the worker
               died before the task's terminal status: the task finishes from the stored outcome, with no
               second call and no second act. The same for an answer whose outcome was ``failed``.
    failed     closed; an earlier rung that did not serve. The ladder goes on from the next attempt.

A state Redis that cannot say whether an answer waits there defers the task (it is asked again later) rather
than closing the call as of unknown cost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeAlias

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from routing.ledger import Closed
from routing.parked import ParkedAnswers
from routing.route import Route
from store import repo
from store.costs import UNKNOWN_COST_ERROR
from store.db import read_scope, session_scope
from store.models import TERMINAL_STATUSES, Attempt, Environment, Result, Task, TaskAction
from store.queries import as_utc
from tasks.context import Context
from tasks.kinds.base import Answer, Outcome, TaskInfo
from tasks.schemas import SubmitRequest
from tasks.storing import store_answered

log = logging.getLogger(__name__)
LOST = "the worker was lost; its call had ended without charge (its hold released) or never started"
UNKNOWN = (
    "the worker was lost while the call was open or its answer waited for the database; "
    "whether the provider charged is unknown: charged at the amount held"
)
NEVER = datetime.min.replace(tzinfo=UTC)


class Ledger(Protocol):
    def close_open_call(self, *, task_id: str, attempt: int) -> Closed: ...

    def settle(self, *, task_id: str, attempt: int, charged_micros: int, price_version: str | None) -> None: ...


@dataclass(frozen=True)
class Resumed:
    """Where a redelivered task goes on: act on ``answer`` again, or (``outcome`` set) finish from it."""

    number: int
    route: Route
    answer: Answer
    outcome: Outcome | None = None
    assists: tuple[tuple[int, Answer], ...] = ()  # answers to the handler's own questions, asked while acting


# a claimed task (None: it had ended) and its attempts so far
Claimed: TypeAlias = tuple[TaskInfo | None, list[Attempt]]


def claim(ctx: Context, task_id: str) -> TaskInfo | None:
    """The task as handlers see it, now ``running``; None when it already has its terminal status."""
    return claim_with_attempts(ctx, task_id)[0]


def claim_with_attempts(ctx: Context, task_id: str) -> tuple[TaskInfo | None, list[Attempt]]:
    """:func:`claim`, with the task's attempts so far read in the same transaction (what :func:`recover`
    starts from: one transaction for the claim and the look at what a dead worker left)."""
    with session_scope(ctx.database_url) as session:
        return claim_in(ctx, session, task_id)


def claim_in(ctx: Context, session: Session, task_id: str) -> tuple[TaskInfo | None, list[Attempt]]:
    """:func:`claim_with_attempts` in ``session``'s transaction (the one that takes the task's lease)."""
    row = repo.claim_task(session, task_id=task_id)
    if row is None:
        return None, []
    return _info(ctx, session, row), repo.attempts_of(session, task_id=task_id)


def _info(ctx: Context, session: Session, row: Task) -> TaskInfo:
    env = session.get(Environment, row.environment)
    workspace = Path(env.path).parent if env else ctx.settings.workspace_dir
    request = SubmitRequest.model_validate(row.payload)
    # a retried task's deadline counts from its latest retry (tasks/actions.py), not from its first submission
    retried = session.scalar(
        select(func.max(TaskAction.at)).where(TaskAction.task_id == row.id, TaskAction.action == "retry")
    )
    since = as_utc(retried) if retried is not None else as_utc(row.created_at)
    return TaskInfo(row.id, row.kind, row.group, row.environment, row.stage, request, workspace, created_at=since)


def finished_task(ctx: Context, task_id: str) -> tuple[TaskInfo, str, Outcome | None] | None:
    """A terminal task with its status and stored outcome (for follow-ups of a redelivery); None if unknown."""
    with read_scope(ctx.database_url) as session:
        row = repo.get_task(session, task_id)
        if row is None or row.status not in TERMINAL_STATUSES:
            return None
        return _info(ctx, session, row), row.status, _outcome(session, task_id, row.stage)


def _outcome(session: Session, task_id: str, stage: str) -> Outcome | None:
    result = session.scalar(select(Result).where(Result.task_id == task_id, Result.stage == stage))
    return Outcome(result.summary, dict(result.data), result.status) if result is not None else None


# --- storing what a call produced --------------------------------------------------------------------------


def store_outcome(session: Session, task: TaskInfo, outcome: Outcome, *, status: str | None = None) -> None:
    """The handler's outcome as the task's result row for its (environment, stage); ``status`` in place of the
    outcome's (a plan's result is ``running`` while its sub-tasks land)."""
    repo.upsert_result(
        session,
        environment=task.environment,
        stage=task.stage,
        task_id=task.id,
        kind=task.kind,
        status=status or outcome.status,
        summary=outcome.summary,
        data=outcome.data,
    )


# --- recovery ----------------------------------------------------------------------------------------------


def resume_from(attempts: list[Attempt], stored: Outcome | None) -> Resumed | None:
    """Pure: where a redelivered task goes on, from its attempts (in order) and its stored outcome.

    With an outcome stored, the attempt it came from is the answered one whose verdict was written last
    (assist calls a handler made while acting got their verdicts before it)."""
    judged = [a for a in attempts if a.answer is not None and a.error_class is None and a.status != "answered"]
    if stored is not None and judged:
        main = max(judged, key=lambda a: (as_utc(a.finished_at) if a.finished_at else NEVER, a.attempt))
        return _resumed(main, stored)
    answered = [a for a in attempts if a.status == "answered" and a.answer is not None]
    if not answered:
        return None
    main = answered[0]  # acting on it may have asked more questions (assists): they came after it
    after = [a for a in attempts if a.attempt > main.attempt and a.answer is not None and a.error_class is None]
    assists = tuple((a.attempt, _answer(a)) for a in after if a.status in ("answered", "succeeded"))
    return replace(_resumed(main, None), assists=assists)


def _resumed(attempt: Attempt, outcome: Outcome | None) -> Resumed:
    route = Route(attempt.provider, attempt.model, "cli" if attempt.transport == "cli" else "api", 0, 0)
    return Resumed(attempt.attempt, route, _answer(attempt), outcome)


def _answer(attempt: Attempt) -> Answer:
    return Answer(attempt.answer or "", attempt.provider, attempt.model, attempt.transport)


def recover(
    ctx: Context, task: TaskInfo, ledger: Ledger, parked: ParkedAnswers, attempts: list[Attempt] | None = None
) -> Resumed | None:
    """Close or complete the calls a dead worker left open, settle answered attempts, and say where the task
    goes on (see the module's docstring); None: from the ladder's next attempt. ``attempts``: the task's
    attempts as read when it was claimed (:func:`claim_with_attempts`); None reads them here."""
    if attempts is None:
        with read_scope(ctx.database_url) as session:
            attempts = repo.attempts_of(session, task_id=task.id)
    if not attempts:  # a first run: nothing to pick up
        return None
    open_calls = [a.attempt for a in attempts if a.status == "running"]
    waiting = {number: parked.find(task.id, number) for number in open_calls}  # all asked before any change
    for number, answer in waiting.items():
        if answer is None:
            _close_open(ctx, task, number, ledger)
        else:
            store_answered(ctx.database_url, task.id, number, answer)
            log.warning("task %s attempt %s: stored the answer that waited in Redis", task.id, number)
    with read_scope(ctx.database_url) as session:
        attempts = repo.attempts_of(session, task_id=task.id)
        stored = _outcome(session, task.id, task.stage)
    for a in attempts:  # answered (a parked answer just stored too): priced, maybe not yet settled (idempotent)
        if a.status == "answered":
            ledger.settle(
                task_id=task.id, attempt=a.attempt, charged_micros=a.cost_micros, price_version=a.price_version
            )
    for number, answer in waiting.items():
        if answer is not None:
            parked.drop(task.id, number)
    return resume_from(attempts, stored)


def _close_open(ctx: Context, task: TaskInfo, number: int, ledger: Ledger) -> None:
    """A call left open with no answer anywhere: charged at its hold (unknown cost), or lost when not held."""
    closed = ledger.close_open_call(task_id=task.id, attempt=number)
    error_class, error = (UNKNOWN_COST_ERROR, UNKNOWN) if closed.unknown else ("WorkerLost", LOST)
    with session_scope(ctx.database_url) as session:
        repo.finish_attempt(
            session,
            task_id=task.id,
            attempt=number,
            status="failed",
            cost_micros=closed.charged_micros,
            price_version=closed.price_version,
            error_class=error_class,
            error=error,
        )
    log.warning("task %s attempt %s: %s", task.id, number, error)
