"""The Celery app. Its configuration is built lazily from the settings and fleet on first use, never at import.

Workers run ``celery -A tasks.app worker -Q <queue>`` and use :data:`app`, configured from the environment
(``SWITCHYARD_*``). Programs that submit with an explicit :class:`Context` get their own app from
:func:`app_for`, configured from that context.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

import celeryconfig
from tasks import telemetry  # noqa: F401 -- Celery signal hooks: log format, task fields, traces
from tasks.context import Context, get_context


def create_celery(context: Context | None = None, *, with_tasks: bool = True) -> Celery:
    """A Celery app whose configuration comes from ``context`` (or the process context) when first used.
    Without ``with_tasks`` it names no task modules, so a process that only watches (Flower) does not load
    them (SQLAlchemy, the router, the kinds: about 30 MB)."""

    def config() -> dict[str, Any]:
        ctx = context or get_context()
        return celeryconfig.build(ctx.settings, ctx.fleet)

    # alerts.beat (the alert sender, a layer above) is named, not imported: the worker loads it with the rest
    include = ["tasks.worker", "tasks.maintenance", "alerts.beat"] if with_tasks else []
    celery = Celery("switchyard", include=include, set_as_current=context is None and with_tasks)
    celery.add_defaults(config)
    return celery


app = create_celery()
# Flower's app (``celery -A tasks.app:monitor flower``): the same broker and settings; it sees tasks by their
# events and the workers' replies, and never runs one
monitor = create_celery(with_tasks=False)
_apps: dict[int, tuple[Context, Celery]] = {}


def app_for(context: Context | None) -> Celery:
    """The app for ``context``: the process-wide :data:`app` when it is None, else one cached per context."""
    if context is None:
        return app
    cached = _apps.get(id(context))
    if cached is None or cached[0] is not context:
        cached = _apps[id(context)] = (context, create_celery(context))
    return cached[1]
