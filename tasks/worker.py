"""The Celery tasks, one per kind, each a thin shell around :func:`tasks.attempt.run_task`.

A task message carries the task id, and, when it was sent to carry on a run (a deferral's retry, a re-send
by the lease detector), the lease token that lets it take the task over (:mod:`tasks.lease`). Every run
first takes the task's lease: a second delivery of a task that runs elsewhere under a live lease ends
quietly (acknowledged, nothing called, nothing changed). While the run lasts, this process renews its lease.

When the database is briefly away the message is retried with a countdown (Celery's retry is used only to
defer, never to repeat a provider call); any other unexpected error still ends the task with a terminal
status that names it.

What Flower shows is what happened: once a task's terminal status is stored, a status other than ``succeeded``
ends the Celery task with :class:`tasks.labels.EndedWithout` (FAILURE, the status and reason as the exception).
It is declared in ``throws`` and nothing retries on it, so the message is simply acknowledged. A delivery that
ends without running (the task runs elsewhere, or this run lost its lease) raises Celery's ``Ignore``, so it
leaves the state Flower shows for that task id as the run that owns it reports it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject
from sqlalchemy.exc import OperationalError

from celeryconfig import task_name
from store import repo
from store.db import read_scope, session_scope
from store.models import TERMINAL_STATUSES
from switchyard.fleet import KINDS
from tasks.app import app
from tasks.attempt import Deferred, run_task
from tasks.claim import Claimed, claim_in
from tasks.context import Context, get_context
from tasks.labels import EndedWithout
from tasks.lease import Leases

log = logging.getLogger(__name__)
DB_RETRY_COUNTDOWN_S = 5
DB_MAX_RETRIES = 60


def process_leases(ctx: Context) -> Leases:
    """The leases of this worker process (one renewer thread per process)."""
    return ctx.part("leases", lambda: Leases(ctx.database_url, ctx.fleet.limits))


NOT_RUN = ("busy", "taken over")  # this delivery did not run the task: another run owns it


def execute(celery_task: Task, task_id: str, lease: str | None = None) -> str:
    """Run the task; its Celery end says how it ended (see the module's docstring)."""
    ctx = get_context()
    ran = _execute(celery_task, ctx, task_id, lease)
    try:
        with read_scope(ctx.database_url) as session:  # no write lock for a read (store/db.py)
            row = repo.get_task(session, task_id)
            status, reason = (row.status, row.reason) if row is not None else (ran, None)
    except OperationalError:  # the database went away just now: the run's own word is all there is
        status, reason = ran, None
    if ran in NOT_RUN and status not in TERMINAL_STATUSES:  # another run owns it and reports its end
        raise Ignore()
    if status in TERMINAL_STATUSES and status != "succeeded":
        raise EndedWithout(status, reason)
    return status


def _execute(celery_task: Task, ctx: Context, task_id: str, lease: str | None) -> str:
    leases = process_leases(ctx)
    try:  # one transaction: the lease and the claim (the task running, its attempts so far)
        verdict, owner, claimed = leases.take_then(task_id, lease, lambda session: claim_in(ctx, session, task_id))
    except OperationalError as exc:
        raise _db_retry(celery_task, task_id, lease, exc) from None
    if verdict == "busy":  # a second delivery (a re-send, the broker's redelivery) of a task running elsewhere
        log.info("task %s runs elsewhere under a live lease; this delivery ends here", task_id)
        return "busy"
    if verdict != "take":  # finished (its follow-ups are checked) or unknown: the attempt loop says which
        return _run(celery_task, ctx, task_id, lease)
    with leases.holding(task_id, owner):
        try:
            owns = lambda: leases.still_mine(task_id, owner)  # noqa: E731
            return _run(celery_task, ctx, task_id, owner, owns=owns, claimed=claimed)
        except Deferred as wait:  # the retry's message carries this run's lease on, past its countdown
            leases.extend(task_id, owner, wait.countdown_s + ctx.fleet.limits.lease_s)
            try:
                retry = celery_task.retry(
                    countdown=wait.countdown_s, kwargs={"lease": owner}, max_retries=None, **shown(celery_task)
                )
            except Reject:  # the retry's message could not be sent (the broker is away): no message carries the
                # lease on, so it ends now and the sender's re-send (no token) can take the task at once, not a
                # countdown and a lease later
                leases.extend(task_id, owner, 0)
                raise
            raise retry from None


def _run(
    celery_task: Task,
    ctx: Context,
    task_id: str,
    lease: str | None,
    *,
    owns: Callable[[], bool] = lambda: True,
    claimed: Claimed | None = None,
) -> str:
    try:
        return run_task(task_id, ctx, owns=owns, claimed=claimed)
    except Deferred:  # no provider or budget now, or waiting for another task: run again later
        raise
    except OperationalError as exc:
        raise _db_retry(celery_task, task_id, lease, exc) from None
    except Exception as exc:  # the task boundary: a bug must still end the task with a status that names it
        log.exception("task %s crashed", task_id)
        with session_scope(ctx.database_url) as session:
            repo.finish_task(
                session,
                task_id=task_id,
                status="failed",
                reason=f"internal error: {type(exc).__name__}: {exc}",
            )
        return "failed"


def _db_retry(celery_task: Task, task_id: str, lease: str | None, exc: OperationalError) -> Exception:
    """Run again in a few seconds; the message carries this run's lease, so it may take the task back."""
    log.warning("database unavailable while running %s; retrying in %ss", task_id, DB_RETRY_COUNTDOWN_S)
    kwargs = {"lease": lease} if lease else {}
    retry: Exception = celery_task.retry(
        countdown=DB_RETRY_COUNTDOWN_S, max_retries=DB_MAX_RETRIES, exc=exc, kwargs=kwargs, **shown(celery_task)
    )
    return retry


def shown(celery_task: Task) -> dict[str, Any]:
    """The Flower labels of the message being run, for the message that carries it on (a retry)."""
    request = celery_task.request
    labels = {name: getattr(request, name, None) for name in ("argsrepr", "kwargsrepr")}
    return {name: value for name, value in labels.items() if value is not None}


def _register(kind: str) -> Any:
    # delivery options (acks_late, reject_on_worker_lost) come from celeryconfig, for every task alike
    # max_retries=None: a deferral (waiting for a provider, a budget, an earlier merge) ends at the task's
    # deadline, decided by the attempt loop, not at Celery's default of three retries
    # throws: a task that ended without success is an expected end (logged without a traceback), not a crash
    @app.task(name=task_name(kind), bind=True, max_retries=None, throws=(EndedWithout,))  # type: ignore[untyped-decorator]
    def run(self: Task, task_id: str, lease: str | None = None) -> str:
        return execute(self, task_id, lease)

    return run


TASKS = {kind: _register(kind) for kind in KINDS}
