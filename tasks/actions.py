"""What a person can do to a task: retry it, cancel it, resume the pipeline it stopped.

    retry    a task that ended without success (failed, rejected, budget_exhausted, no_provider, cancelled)
             runs again under its own id, so its place in its pipeline and plan is kept: when it succeeds, its
             follow-ups (review, re-implementation, integration, dependents, its plan) go on as if it had
             succeeded the first time.
    cancel   a queued, deferred or running task ends ``cancelled``: its message, when delivered, finds it
             finished and does nothing; a run in progress loses its lease and stops at its next look (a call
             already open is answered and charged at its real cost, then not acted on); the holds of calls not
             open are released; its worktree is kept.
    resume   for the pipeline (or plan) a task belongs to: every task that ended without success and that nothing
             came after is retried, and a succeeded task whose follow-ups were never made gets them made.

Nothing is charged twice and nothing is lost. A retry goes on from its attempts: new attempts take the next
numbers (the ledger is keyed by task and attempt, so the old charges stay and are not made again), a call a dead
worker left answered is acted on without a second call (:func:`tasks.claim.recover`), and the task's cost is
again the sum of all its charges. The result the failed run left (which would otherwise be replayed as the
outcome) is moved into the action's row (``task_actions.before``), not deleted. Every action is recorded with
the status and reason the task had, and ``tasks show`` lists them.

Each action's rows (status, lease, owed message, action row) are written in one transaction; the message is
sent after the commit, through the outbox (:mod:`tasks.send`): a broker that is away only delays it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, delete, select, update
from sqlalchemy.orm import Session

from routing.ledger import Ledger
from store import chains, outbox, repo
from store import pipeline as rows
from store.db import session_scope
from store.leases import as_utc
from store.models import ACTIVE_STATUSES, TERMINAL_STATUSES, Attempt, Result, Spend, Task
from switchyard.errors import InputError, NotFound
from tasks import dependencies
from tasks.claim import finished_task
from tasks.context import Context
from tasks.outbox import owed_before
from tasks.pipeline import after_terminal
from tasks.send import publish

log = logging.getLogger(__name__)
RETRYABLE = tuple(s for s in TERMINAL_STATUSES if s != "succeeded")
CANCELLABLE = ACTIVE_STATUSES
CANCELLED_REASON = "cancelled by {by}"
SETTLED = {  # what a retried task that depends on others became (tasks/dependencies.settle)
    "release": ("queued", "its dependencies have succeeded"),
    "wait": ("deferred", "held until its dependencies finish"),
    "end": ("ended", "a dependency did not succeed: retry or resume it first"),
}


@dataclass(frozen=True)
class Done:
    """What an action did to one task."""

    task_id: str
    action: str
    from_status: str
    status: str
    note: str = ""


def _task(session: Session, task_id: str) -> Task:
    task = repo.get_task(session, task_id)
    if task is None:
        raise NotFound(f"no task {task_id!r}; list tasks with: switchyard tasks list")
    return task


def _record(session: Session, task: Task, action: str, by: str, before: dict[str, object] | None = None) -> None:
    repo.record_action(
        session, task_id=task.id, action=action, from_status=task.status, from_reason=task.reason, before=before, by=by
    )


# --- retry -------------------------------------------------------------------------------------------------


def retry(ctx: Context, task_id: str, *, by: str = "cli") -> Done:
    """Run ``task_id`` again (see the module's docstring); InputError when it has not ended without success."""
    with session_scope(ctx.database_url) as session:
        task = _task(session, task_id)
        if task.status not in RETRYABLE:
            raise InputError(
                f"task {task_id} is {task.status}; only a task that ended without success "
                f"({', '.join(RETRYABLE)}) can be retried"
                + ("; cancel it first with: switchyard tasks cancel ID" if task.status in ACTIVE_STATUSES else "")
            )
        before = _take_result(session, task)
        _record(session, task, "retry", by, before)
        kind, from_status = task.kind, task.status
        held = bool(rows.dependencies_of(session, task_id))
        _requeue(session, task_id)
        if held:  # it waits for its dependencies again: released below if they succeeded (a resume retries them)
            rows.hold_task(session, task_id=task_id, waiting_for=[d.id for d in rows.dependencies_of(session, task_id)])
        else:
            outbox.add(session, task_id=task_id, action=outbox.SEND)
    status, note = "queued", ""
    if held:
        settled = dependencies.settle(ctx, task_id)
        status, note = SETTLED[settled]
    else:
        publish(ctx, task_id, kind)  # a broker that is away: the outbox sends it later
    log.info("task %s (%s, was %s) retried by %s", task_id, kind, from_status, by)
    return Done(task_id, "retry", from_status, status, note)


def _take_result(session: Session, task: Task) -> dict[str, object]:
    """Remove the result the ended run left (so the retry does not finish from it), returning it to keep."""
    result = session.scalar(select(Result).where(Result.task_id == task.id, Result.stage == task.stage))
    if result is None:
        return {}
    kept: dict[str, object] = {"status": result.status, "summary": result.summary, "data": result.data}
    session.execute(delete(Result).where(Result.id == result.id))
    return kept


def _requeue(session: Session, task_id: str) -> None:
    session.execute(
        update(Task)
        .where(Task.id == task_id)
        .values(status="queued", reason=None, finished_at=None, lease_owner=None, lease_until=None)
    )


# --- cancel ------------------------------------------------------------------------------------------------


def cancel(ctx: Context, task_id: str, *, by: str = "cli") -> Done:
    """End a queued, deferred or running task as ``cancelled`` (see the module's docstring)."""
    with session_scope(ctx.database_url) as session:
        task = _task(session, task_id)
        if task.status not in CANCELLABLE:
            raise InputError(
                f"task {task_id} is {task.status}; only a task that is {', '.join(CANCELLABLE)} can be cancelled"
                + ("; to run it again: switchyard tasks retry ID" if task.status in RETRYABLE else "")
            )
        from_status = task.status
        _record(session, task, "cancel", by)
        repo.finish_task(session, task_id=task_id, status="cancelled", reason=CANCELLED_REASON.format(by=by))
        # the run in progress, if any, loses its lease: it stops at its next look (tasks/attempt.py, owns())
        session.execute(update(Task).where(Task.id == task_id).values(lease_owner=None, lease_until=None))
        open_calls = set(session.scalars(select_open_calls(task_id)))
        held = list(session.scalars(select(Spend.attempt).where(Spend.task_id == task_id, Spend.state == "held")))
    ledger = Ledger(ctx.database_url, ctx.fleet)
    released = [
        n for n in held if n not in open_calls and ledger.release(task_id=task_id, attempt=n, reason="cancelled")
    ]
    _follow_up(ctx, task_id)
    note = f"released {len(released)} hold(s)" if released else ""
    if open_calls:
        note = (note + "; " if note else "") + "a call in progress is charged at its real cost when it answers"
    log.info("task %s (was %s) cancelled by %s%s", task_id, from_status, by, f": {note}" if note else "")
    return Done(task_id, "cancel", from_status, "cancelled", note)


def select_open_calls(task_id: str) -> Select[Any]:  # the attempts whose call is open
    return select(Attempt.attempt).where(Attempt.task_id == task_id, Attempt.status == "running")


def _follow_up(ctx: Context, task_id: str) -> None:
    """The cancelled task's dependents and plan learn of it now (the outbox would, later)."""
    finished = finished_task(ctx, task_id)
    if finished is not None:
        after_terminal(ctx, *finished)


# --- resume ------------------------------------------------------------------------------------------------


def resume(ctx: Context, task_id: str, *, by: str = "cli") -> list[Done]:
    """Carry on the pipeline ``task_id`` belongs to from where it stopped; what was done to which task."""
    with session_scope(ctx.database_url) as session:
        task = _task(session, task_id)
        tree = chains.chain(session, task)
        parents = {row["parent_id"] for row in tree if row["parent_id"]}
        leaves = [row for row in tree if row["id"] not in parents]
        stopped = [row["id"] for row in leaves if row["status"] in RETRYABLE]
        since = owed_before(datetime.now(UTC), ctx.fleet.outbox)  # younger rows: their writer is on them
        unfollowed = [row["id"] for row in leaves if row["status"] == "succeeded" and _owed(session, row["id"], since)]
        active = [row["id"] for row in tree if row["status"] in ACTIVE_STATUSES]
    if not stopped and not unfollowed:
        going = f"; {len(active)} of its tasks are still going" if active else ""
        raise InputError(
            f"the pipeline of task {task_id} has not stopped: no task in it ended without success with nothing "
            f"after it{going}; see: switchyard tasks show {task_id}"
        )
    done = [retry(ctx, stopped_id, by=by) for stopped_id in stopped]
    for succeeded_id in unfollowed:
        finished = finished_task(ctx, succeeded_id)
        if finished is not None:
            after_terminal(ctx, *finished)
            done.append(Done(succeeded_id, "follow_ups", "succeeded", "succeeded", "its follow-ups were made"))
    return done


def _owed(session: Session, task_id: str, created_before: datetime) -> bool:
    """Whether a succeeded task's follow-ups were never made (owed still past the outbox's grace, in which the
    task's own run makes them, or given up by the sender)."""
    row = outbox.get(session, task_id=task_id, action=outbox.FOLLOW_UPS)
    if row is None:
        return False
    if (row.last_error or "").startswith("given up"):
        return True
    return row.sent_at is None and as_utc(row.created_at) <= created_before
