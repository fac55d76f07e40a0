"""What ``switchyard status`` and ``switchyard health`` show, gathered from SQL, the broker and Celery."""

from __future__ import annotations

from typing import Any

from store.db import session_scope
from store.queries import environment_status, group_status
from tasks.context import Context
from workers.health import broker_ok, control_app, database_ok, queue_depths, workers_by_group

Row = dict[str, Any]


def groups_view(ctx: Context, *, timeout: float | None = None) -> list[Row]:
    """The groups of :func:`store.queries.group_status` with their live workers (Celery inspection) and queue depth;
    ``timeout`` defaults to the profile's inspect threshold."""
    timeout = ctx.settings.health_thresholds.inspect_timeout_s if timeout is None else timeout
    url = ctx.settings.effective_broker_url
    reachable = broker_ok(url) is None
    live: dict[str, list[str]] = {}
    if reachable:
        app = control_app(ctx.settings, ctx.fleet)
        try:
            live = workers_by_group(app, ctx.fleet, timeout, expect=known_workers(ctx))
        finally:
            app.close()
    depths = queue_depths(url, ctx.fleet) if reachable else {}
    with session_scope(ctx.database_url) as session:
        rows = group_status(session, ctx.fleet)
    for row in rows:
        workers = live.get(row["name"], [])
        row.update(workers=workers, live_workers=len(workers), queue_depth=depths.get(row["name"]))
    return rows


def known_workers(ctx: Context) -> int | None:
    """How many workers there are, when that is known: on the embedded broker (loopback only) every worker is
    one that ``up`` started here and recorded in a pidfile, so the inspection can end when those answered.
    None with any other broker, where workers of other hosts may answer too (then the whole window is waited)."""
    from workers import pidfiles
    from workers.services import LOOPBACK, WORKER_PREFIX

    if not ctx.settings.embedded_broker or ctx.settings.host not in LOOPBACK:
        return None
    run_dir = ctx.settings.run_dir
    names = [name for name in pidfiles.pidfile_names(run_dir) if name.startswith(WORKER_PREFIX)]
    records = [pidfiles.read_pidfile(run_dir, name) for name in names]
    return sum(1 for r in records if r is not None and pidfiles.record_alive(r)) or None


def environments_view(ctx: Context) -> list[Row]:
    """One row per (environment, stage) with its branch, task counts and last result."""
    with session_scope(ctx.database_url) as session:
        envs = environment_status(session, ctx.fleet)
    rows = []
    for env in envs:
        for stage in env["stages"]:
            last = stage["last_result"] or {}
            rows.append(
                {
                    "environment": env["name"],
                    "initialized": env["initialized"],
                    "path": env["path"],
                    "stage": stage["name"],
                    "branch": stage["branch"],
                    "counts": stage["counts"],
                    "last_result": last.get("summary", ""),
                }
            )
    return rows


def health_view(ctx: Context) -> list[Row]:
    """Database, broker and every process `up` started: each with ok and a detail."""
    from workers.launcher import fleet_status  # the launcher loads httpx for its probes: only here

    db_problem = database_ok(ctx.database_url)
    broker_problem = broker_ok(ctx.settings.effective_broker_url)
    checks: list[Row] = [
        {"name": "database", "ok": db_problem is None, "detail": db_problem or "answers"},
        {"name": "broker connection", "ok": broker_problem is None, "detail": broker_problem or "answers"},
    ]
    for service in fleet_status(ctx.settings):
        detail = f"pid {service.pid}" + (" (stale pidfile)" if service.stale else "")
        checks.append({"name": f"process {service.name}", "ok": service.alive, "detail": detail})
    return checks
