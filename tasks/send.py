"""Putting an existing task's message on its group's queue, and the schema a submitter needs first.

Below :mod:`tasks.submit` and :mod:`tasks.dependencies`, which both send: a task is sent when it is submitted,
or later when the tasks it depends on have all succeeded.
"""

from __future__ import annotations

from kombu.exceptions import OperationalError

from celeryconfig import task_name
from store import repo
from store.db import session_scope
from store.migrate import ensure_schema
from switchyard.errors import ServiceUnavailable
from tasks.app import app_for
from tasks.context import Context

_schema_ready: set[str] = set()


def prepare_database(url: str) -> None:
    """Bring the schema to head once per process and URL."""
    if url not in _schema_ready:
        ensure_schema(url)
        _schema_ready.add(url)


def enqueue(ctx: Context, task_id: str, kind: str) -> None:
    """Send the message of an existing task (one that was held for its dependencies) to its group's queue."""
    send(ctx, task_id, kind, ctx.fleet.group_for_kind(kind).queue)


def send(ctx: Context, task_id: str, kind: str, queue: str) -> None:
    try:
        app_for(ctx).send_task(task_name(kind), args=[task_id], task_id=task_id, queue=queue, retry=False)
    except OperationalError as exc:
        with session_scope(ctx.database_url) as session:
            repo.finish_task(session, task_id=task_id, status="rejected", reason=f"broker unavailable: {exc}")
        raise ServiceUnavailable(
            f"the broker did not take task {task_id} ({exc}); is the fleet up? run: switchyard up"
        ) from None
