"""The periodic sender: what the outbox still owes, and tasks whose message the broker lost.

Run by celery beat every ``[outbox] every_s`` (:func:`tasks.maintenance.send_outbox`). Each run

1. takes the owed rows older than ``grace_s`` whose next try is due (:mod:`store.outbox`): a ``send`` row puts
   the task's message on its queue; a ``follow_ups`` row runs the finished task's follow-ups again
   (:func:`tasks.pipeline.after_terminal`, which is idempotent). A failure counts a try and sets the next one
   (doubling up to ``retry_max_s``); a follow-up the fleet refuses as bad input is given up, with the reason.
2. finds tasks that wait for a message (``queued``, or ``deferred`` by a worker) whose last send is older than
   ``lost_after_s`` and that the broker has no message for, looked at twice (a message passing from its queue
   to a worker is in neither for an instant): their message is sent again. A duplicate delivery is harmless:
   a task that already runs or finished is not run again.
3. finds messages a worker reserved and never acknowledged because it was killed (kombu keeps them until the
   broker's visibility timeout, an hour by default): a task still waiting for its message past
   ``lost_after_s`` (deferred: past its longest countdown too) whose message sits reserved that long has its
   message put back at the head of its queue; the reservation of a task that has ended is dropped (its
   acknowledgement died with the worker). A running task's reservation is left alone: its lease says whether
   its worker lives (:mod:`tasks.lease`).
4. ends a plan parked until its sub-tasks land whose sub-tasks' chains are all complete
   (:func:`tasks.plans.sweep_landing`: the safety net behind the last sub-task's own update).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from store import outbox
from store.db import session_scope
from store.models import TERMINAL_STATUSES, Task
from switchyard.errors import InputError
from switchyard.fleet_models import OutboxPolicy
from tasks import dependencies
from tasks.claim import finished_task
from tasks.context import Context
from tasks.outbox import LOST_STATUSES, is_lost, owed_before, parked, sent_before
from tasks.pipeline import after_terminal
from tasks.plans import sweep_landing
from tasks.queues import BrokerView, Reserved, forget, look_into, reservations, restore
from tasks.send import failed, publish, put_on_queue

log = logging.getLogger(__name__)
LookIntoBroker = Callable[[Context], BrokerView | None]


@dataclass(frozen=True)
class SenderRun:
    """What one run did: messages sent, follow-ups run, tries that failed, lost messages sent again."""

    sent: int = 0
    followed_up: int = 0
    failed: int = 0
    resent: int = 0


def run_once(ctx: Context, *, now: datetime | None = None, look: LookIntoBroker = look_into) -> SenderRun:
    now = now or datetime.now(UTC)
    policy = ctx.fleet.outbox
    with session_scope(ctx.database_url) as session:
        rows = outbox.owed(session, created_before=owed_before(now, policy), now=now, limit=policy.batch)
    done = [deliver(ctx, row) for row in rows]
    sent = sum(1 for row, ok in zip(rows, done, strict=True) if ok and row.action == outbox.SEND)
    followed = sum(1 for row, ok in zip(rows, done, strict=True) if ok and row.action == outbox.FOLLOW_UPS)
    broker_away = any(not ok and row.action == outbox.SEND for row, ok in zip(rows, done, strict=True))
    resent = 0 if broker_away else resend_lost(ctx, now=now, look=look) + release_stale(ctx, now=now)
    sweep_landing(ctx, settle_dependents=dependencies.on_finished)  # plans whose sub-tasks all landed or ended
    return SenderRun(sent=sent, followed_up=followed, failed=done.count(False), resent=resent)


def deliver(ctx: Context, row: outbox.Owed) -> bool:
    """Act on one owed row; True when it is done (sent, or its follow-ups ran)."""
    if row.action == outbox.SEND:
        return publish(ctx, row.task_id, row.kind)
    try:
        finished = finished_task(ctx, row.task_id)
        if finished is None:  # not terminal after all (cannot be: the row is written with the status)
            _give_up(ctx, row, "given up: the task has no terminal status")
        else:
            after_terminal(ctx, *finished)  # marks the row done at its end
    except InputError as exc:  # a follow-up the fleet refuses (a branch gone): no retry can help
        log.error("follow-ups of task %s given up: %s", row.task_id, exc)
        _give_up(ctx, row, f"given up: {type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 -- whatever failed (broker, database, git), the row stays owed
        log.warning("follow-ups of task %s failed, will be tried again: %s: %s", row.task_id, type(exc).__name__, exc)
        failed(ctx, row.task_id, row.action, f"{type(exc).__name__}: {exc}", tries_before=row.tries)
        return False
    return True


def _give_up(ctx: Context, row: outbox.Owed, why: str) -> None:
    with session_scope(ctx.database_url) as session:
        outbox.mark_failed(session, task_id=row.task_id, action=row.action, error=why, retry_at=datetime.now(UTC))
        outbox.mark_sent(session, task_id=row.task_id, action=row.action)


def resend_lost(ctx: Context, *, now: datetime, look: LookIntoBroker = look_into) -> int:
    """Send again the message of every task that waits for one the broker does not have; how many."""
    policy = ctx.fleet.outbox
    with session_scope(ctx.database_url) as session:
        waiting = outbox.sent_not_started(
            session, sent_before=sent_before(now, policy), statuses=LOST_STATUSES, limit=policy.batch
        )
    candidates = [w for w in waiting if _lost(w, now, policy, on_broker=False)]
    if not candidates:
        return 0
    first = look(ctx)
    if first is None:
        return 0
    maybe = [w for w in candidates if w.task_id not in first.task_ids]
    second = look(ctx) if maybe else BrokerView()
    lost = [w for w in maybe if _lost(w, now, policy, on_broker=w.task_id in (second or BrokerView()).task_ids)]
    still = _still_waiting(ctx, {w.task_id: w.status for w in lost})
    for w in lost:
        if w.task_id in still:
            put_on_queue(ctx, w.task_id, w.kind)
            with session_scope(ctx.database_url) as session:
                outbox.mark_resent(session, task_id=w.task_id, now=now, why=f"re-sent: {w.status} with no message")
            log.warning("task %s (%s, %s) had no message on the broker; sent again", w.task_id, w.kind, w.status)
    return len(still)


def release_stale(ctx: Context, *, now: datetime) -> int:
    """Put back the messages killed workers reserved and never started; drop those of ended tasks.
    How many were put back."""
    policy, limits = ctx.fleet.outbox, ctx.fleet.limits
    held = reservations(ctx)
    if not held:
        return 0
    old = now - timedelta(seconds=policy.lost_after_s)
    stale = {task_id: r for task_id, r in held.items() if r.since <= old.timestamp()}
    if not stale:
        return 0
    with session_scope(ctx.database_url) as session:
        found = session.execute(select(Task.id, Task.status, Task.reason).where(Task.id.in_(stale)))
        statuses = {task_id: (status, reason) for task_id, status, reason in found}
    deferred_old = (old - timedelta(seconds=limits.max_defer_countdown_s)).timestamp()
    put_back = 0
    for task_id, reserved in stale.items():
        status, reason = statuses.get(task_id, ("", None))
        if status in TERMINAL_STATUSES or parked(status, reason):  # nothing left for that message to do
            forget(ctx, reserved.tag)
        elif _unstarted(status, reason, reserved, deferred_old, old.timestamp()):
            restore(ctx, reserved.tag)
            with session_scope(ctx.database_url) as session:
                why = f"re-sent: {status}, its message reserved by a worker that never started it"
                outbox.mark_resent(session, task_id=task_id, now=now, why=why)
            log.warning(
                "task %s (%s): its message was reserved by a dead worker; put back on its queue", task_id, status
            )
            put_back += 1
    return put_back


def _unstarted(status: str, reason: str | None, reserved: Reserved, deferred_old: float, old: float) -> bool:
    """A task waiting for the message a worker holds: queued, or deferred past its countdown (a deferred task's
    message waits in its worker for its countdown; a parked one has no message on purpose). A live worker runs
    a message when its ``eta`` comes, so one still reserved ``lost_after_s`` past it is stale; one without an
    eta is given the longest countdown too."""
    if status == "queued":
        return True
    if status != "deferred" or parked(status, reason):
        return False
    due = reserved.eta if reserved.eta is not None else reserved.since + (old - deferred_old)
    return reserved.since <= old and due <= old


def _lost(w: outbox.Sent, now: datetime, policy: OutboxPolicy, *, on_broker: bool) -> bool:
    return is_lost(status=w.status, reason=w.reason, sent_at=w.sent_at, now=now, policy=policy, on_broker=on_broker)


def _still_waiting(ctx: Context, statuses: dict[str, str]) -> set[str]:
    """Those of the tasks still in the status they had (none was claimed or finished meanwhile)."""
    if not statuses:
        return set()
    with session_scope(ctx.database_url) as session:
        now_in = {i: s for i, s in session.execute(select(Task.id, Task.status).where(Task.id.in_(statuses)))}
    return {task_id for task_id, status in statuses.items() if now_in.get(task_id) == status}
