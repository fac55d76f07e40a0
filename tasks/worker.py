"""The Celery tasks, one per kind, each a thin shell around :func:`tasks.attempt.run_task`.

A task message carries only the task id; everything else is read from SQL. When the database is briefly
away the message is retried with a countdown (Celery's retry is used only to defer, never to repeat a
provider call); any other unexpected error still ends the task with a terminal status that names it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from sqlalchemy.exc import OperationalError

from celeryconfig import task_name
from store import repo
from store.db import session_scope
from switchyard.fleet import KINDS
from tasks.app import app
from tasks.attempt import Deferred, run_task
from tasks.context import get_context

log = logging.getLogger(__name__)
DB_RETRY_COUNTDOWN_S = 5
DB_MAX_RETRIES = 60


def execute(celery_task: Task, task_id: str) -> str:
    ctx = get_context()
    try:
        return run_task(task_id, ctx)
    except Deferred as wait:  # no provider or budget now, or waiting for another task: run again later
        raise celery_task.retry(countdown=wait.countdown_s, max_retries=None) from None
    except OperationalError as exc:
        log.warning("database unavailable while running %s; retrying in %ss", task_id, DB_RETRY_COUNTDOWN_S)
        raise celery_task.retry(countdown=DB_RETRY_COUNTDOWN_S, max_retries=DB_MAX_RETRIES, exc=exc) from None
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


def _register(kind: str) -> Any:
    # delivery options (acks_late, reject_on_worker_lost) come from celeryconfig, for every task alike
    # max_retries=None: a deferral (waiting for a provider, a budget, an earlier merge) ends at the task's
    # deadline, decided by the attempt loop, not at Celery's default of three retries
    @app.task(name=task_name(kind), bind=True, max_retries=None)  # type: ignore[untyped-decorator]
    def run(self: Task, task_id: str) -> str:
        return execute(self, task_id)

    return run


TASKS = {kind: _register(kind) for kind in KINDS}
