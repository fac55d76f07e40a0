"""Periodic upkeep, sent by ``celery beat`` (started by ``switchyard up``; the schedule is in celeryconfig).

``sweep_holds`` releases budget holds their worker left behind: a worker killed during a call never settles
its hold, and the money would stay held until the window rolled over. A hold is released once its task has
ended, or once it is older than the longest a task may run (Celery's hard time limit) plus a margin, so a
call that is still running is never swept.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celeryconfig import SWEEP_HOLDS_TASK
from routing.ledger import Ledger
from tasks.app import app
from tasks.context import get_context

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
        log.warning("released %d budget hold(s) left by workers that died", released)
    return released
