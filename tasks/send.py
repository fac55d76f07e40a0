"""Putting an existing task's message on its group's queue, and the schema a submitter needs first.

Below :mod:`tasks.submit` and :mod:`tasks.dependencies`, which both send: a task is sent when it is submitted,
or later when the tasks it depends on have all succeeded. Every message is owed in the outbox first (a
``send`` row committed with the task row or its release, :mod:`store.outbox`); :func:`publish` is the try
right after that commit. A broker that refuses counts a failed try and sets the next one; the periodic sender
(:mod:`tasks.sender`) sends it when the broker is back. A refused send never ends the task.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from kombu.exceptions import OperationalError

from celeryconfig import task_name
from store import outbox
from store.db import session_scope
from store.migrate import ensure_schema_once
from tasks.app import app_for
from tasks.context import Context
from tasks.labels import labels_of
from tasks.outbox import retry_at

log = logging.getLogger(__name__)


def prepare_database(url: str) -> None:
    """Bring the schema to head once per process and URL."""
    ensure_schema_once(url)


def put_on_queue(ctx: Context, task_id: str, kind: str) -> None:
    """Send ``task_id``'s message to its group's queue (Celery task id = row id); kombu's OperationalError
    when the broker cannot take it. A few quick reconnects cover a pooled connection the broker dropped. The message
    is labelled for Flower (kind, environment, stage, title, parent: :mod:`tasks.labels`)."""
    policy = ctx.fleet.outbox
    with session_scope(ctx.database_url) as session:
        shown = labels_of(session, task_id)
    app_for(ctx).send_task(
        task_name(kind),
        args=[task_id],
        task_id=task_id,
        queue=ctx.fleet.group_for_kind(kind).queue,
        retry=policy.publish_retries > 0,
        retry_policy={"max_retries": policy.publish_retries, "interval_start": 0, "interval_step": 0.5},
        **(shown.options() if shown else {}),
    )


def publish(ctx: Context, task_id: str, kind: str, *, now: datetime | None = None) -> bool:
    """Send the message the outbox owes for ``task_id`` and mark it sent; False when the broker did not take
    it (the failed try is recorded, and the sender tries again later)."""
    try:
        put_on_queue(ctx, task_id, kind)
    except OperationalError as exc:
        failed(ctx, task_id, outbox.SEND, f"broker unavailable: {exc}", tries_before=_tries(ctx, task_id))
        log.warning(
            "task %s (%s) not sent, the broker is unavailable (%s); the outbox will send it", task_id, kind, exc
        )
        return False
    with session_scope(ctx.database_url) as session:
        outbox.mark_sent(session, task_id=task_id, action=outbox.SEND, now=now)
    return True


def failed(ctx: Context, task_id: str, action: str, error: str, *, tries_before: int) -> None:
    """Record a failed try of ``action`` for ``task_id`` and when the next one is due."""
    when = retry_at(tries_before + 1, datetime.now(UTC), ctx.fleet.outbox)
    with session_scope(ctx.database_url) as session:
        outbox.mark_failed(session, task_id=task_id, action=action, error=error, retry_at=when)


def _tries(ctx: Context, task_id: str) -> int:
    with session_scope(ctx.database_url) as session:
        row = outbox.get(session, task_id=task_id, action=outbox.SEND)
        return row.tries if row is not None else 0
