"""Periodic upkeep, sent by ``celery beat`` (started by ``switchyard up``; the schedule is in celeryconfig).

``recover_leases`` (one entry per group, on the group's queue) sends again the group's tasks whose lease ran
out: their worker died, and another worker of the group takes them over (see :mod:`tasks.lease`). It also
frees the providers' in-flight slots that calls of dead processes on this host hold
(:meth:`routing.breaker.Breakers.reclaim_gone`): otherwise a provider whose slots all died with their workers
answers ``busy`` until each slot's lease (the provider timeout and a margin) runs out.

``sweep_holds`` and ``send_outbox`` go to the maintenance queue (:data:`celeryconfig.MAINTENANCE_QUEUE`), which
every group's worker consumes besides its own.

``sweep_holds`` ends the budget holds their worker left behind: a worker killed during a call never settles
its hold, and the money would stay held until the window rolled over. A hold is ended as its attempt says
(settled at the stored cost, charged as unknown cost for a call left open, else released) once its task has
ended, or once its task's lease has run out (the worker that took the hold is gone); a hold of a task that
never had a lease (a run outside a worker) once it is older than the longest a task may run (Celery's hard
time limit) plus a margin, so a call that is still running is never swept.

``send_outbox`` is the outbox's periodic sender (:mod:`tasks.sender`): messages and follow-ups that were owed
but not sent (the broker was away, or their writer died), and queued tasks whose message the broker lost.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from kombu.exceptions import OperationalError

from celeryconfig import RECOVER_LEASES_TASK, SEND_OUTBOX_TASK, SWEEP_HOLDS_TASK, task_name
from routing.ledger import Ledger
from store.db import session_scope
from switchyard.errors import StateUnavailable
from tasks.app import app
from tasks.context import Context, get_context
from tasks.labels import labels_of
from tasks.lease import resend_expired
from tasks.sender import run_once

log = logging.getLogger(__name__)
SWEEP_MARGIN_S = 60  # past the task time limit: the worker that took the hold is surely gone


def hold_age_limit(task_time_limit_s: int) -> timedelta:
    return timedelta(seconds=task_time_limit_s + SWEEP_MARGIN_S)


@app.task(name=SWEEP_HOLDS_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def sweep_holds() -> int:
    """Release the holds of dead workers; how many were released."""
    ctx = get_context()
    released = Ledger(ctx.database_url, ctx.fleet).sweep(older_than=hold_age_limit(ctx.fleet.limits.task_time_limit_s))
    if released:
        log.warning("ended %d budget hold(s) left by workers that died", released)
    return released


@app.task(name=RECOVER_LEASES_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def recover_leases(group: str) -> int:
    """Send again the tasks of ``group`` whose lease ran out; how many were sent."""
    ctx = get_context()

    def send(task_id: str, kind: str, token: str) -> None:
        queue = ctx.fleet.group_for_kind(kind).queue
        try:
            with session_scope(ctx.database_url) as session:
                shown = labels_of(session, task_id)
            options = shown.options() if shown else {}
            app.send_task(
                task_name(kind), args=[task_id], kwargs={"lease": token}, task_id=task_id, queue=queue, **options
            )
        except OperationalError as exc:  # its lease runs out again, and a later round sends it once more
            log.warning("could not send task %s again: %s", task_id, exc)

    sent = resend_expired(ctx.database_url, ctx.fleet.limits, send, group=group, now=datetime.now(UTC))
    reclaim_slots(ctx)
    return len(sent)


def reclaim_slots(ctx: Context) -> int:
    """Free the provider slots that calls of killed workers on this host still hold; how many."""
    try:
        breakers = ctx.breakers()
        return sum(breakers.reclaim_gone(name) for name in ctx.fleet.providers)
    except StateUnavailable as exc:  # the next round tries again; the slots' own leases end them meanwhile
        log.warning("could not look into the provider slots: %s", exc)
        return 0


@app.task(name=SEND_OUTBOX_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def send_outbox() -> dict[str, int]:
    """Send what the outbox owes and re-send lost messages; the counts of what was done."""
    done = run_once(get_context())
    if done.failed or done.resent:
        log.warning("outbox: %d sent, %d follow-ups, %d failed, %d lost re-sent", *vars(done).values())
    return dict(vars(done))
