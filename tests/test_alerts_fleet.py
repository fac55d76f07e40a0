"""Alerts from a running fleet: real `celery worker` and `celery beat` processes on Redis and PostgreSQL, the
simulator over HTTP, and a real HTTP receiver (``json://127.0.0.1:PORT/``) started by the test.

The receiver gets exactly one alert for the budget window whose alert line the spend crossed, one when the
claude breaker opens and one when it closes again, although it answers 500 to the first two posts. A
receiver that holds every post for a long time never slows a task: the alert sender runs in the same worker
process as the tasks (one worker for the default queue and pr_review), off their path.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from alert_receiver import Receiver, receiving
from conftest import Processes
from pipeline_kit import make_context
from sqlalchemy import select
from test_lease_recovery import _spawn, wait_for

from simulator.server import BackgroundSimulator
from store import alerts
from store.db import session_scope
from store.models import TERMINAL_STATUSES, AlertRow, Task
from tasks.context import Context
from tasks.submit import submit
from workers.services import beat_args, worker_args

pytestmark = pytest.mark.integration
OPEN_S = 3.0


def fleet_context(tmp_path: Path, server: BackgroundSimulator, redis_url: str, db: str, receiver: Receiver) -> Context:
    changes = {
        "urls = []": f'urls = ["{receiver.url}"]',
        "every_s = 15.0\ntimeout_s = 10.0\nretry_initial_s = 5.0\nretry_max_s = 600.0": (
            "every_s = 1.0\ntimeout_s = 60.0\nretry_initial_s = 0.3\nretry_max_s = 2.0"
        ),
        "cap_usd = 50.0\nalert_usd = 40.0": "cap_usd = 50.0\nalert_usd = 0.000001",  # the first hold crosses it
        "failure_threshold = 5\nopen_seconds = 60.0": f"failure_threshold = 2\nopen_seconds = {OPEN_S}",
    }
    return make_context(tmp_path, server.url, redis_url, db, **changes)


def start_fleet(ctx: Context, processes: Processes, tmp_path: Path) -> None:
    """One worker for the default queue (where beat sends the alert sender) and pr_review, and beat."""
    args = worker_args(ctx.fleet.group("pr_review"))
    args[args.index("-Q") + 1] = f"{ctx.fleet.groups[0].queue},pr_review"
    _spawn(ctx, processes, args, tmp_path / "worker.log")
    _spawn(ctx, processes, beat_args(tmp_path / "beat-schedule"), tmp_path / "beat.log")


def review(ctx: Context, n: int = 1) -> str:
    return submit({"kind": "pr_review", "environment": "dev1", "branch": f"feature/sample-{n}"}, context=ctx)


def finished(ctx: Context, task_id: str) -> Task | None:
    with session_scope(ctx.database_url) as session:
        task = session.get(Task, task_id)
        return task if task is not None and task.status in TERMINAL_STATUSES else None


def run(ctx: Context, n: int = 1, timeout: float = 180) -> Task:
    task_id = review(ctx, n)
    task: Task = wait_for(f"task {task_id} to finish", lambda: finished(ctx, task_id), timeout=timeout)
    return task


def alert_rows(ctx: Context, cause: str | None = None) -> list[AlertRow]:
    query = select(AlertRow).order_by(AlertRow.id)
    if cause is not None:
        query = query.where(AlertRow.cause == cause)
    with session_scope(ctx.database_url) as session:
        return list(session.scalars(query))


def sim(server: BackgroundSimulator, provider: str, **fault: Any) -> None:
    httpx.post(f"{server.url}/_sim/providers/{provider}", json=fault, timeout=10).raise_for_status()


def test_a_receiver_gets_one_alert_per_budget_window_and_per_breaker_opening_and_closing(
    tmp_path: Path, server: BackgroundSimulator, redis_url: str, postgres_url: str, processes: Processes
) -> None:
    with receiving(fail_first=2) as receiver:
        ctx = fleet_context(tmp_path, server, redis_url, postgres_url, receiver)
        start_fleet(ctx, processes, tmp_path)
        try:
            for n in (1, 2, 3):  # the first hold crosses the day's alert line; the others are in the same window
                assert run(ctx, n).status == "succeeded"
            wait_for("the budget alert", lambda: receiver.with_title("all/day reached its alert line"), timeout=120)

            sim(server, "claude", error_rate=1.0, error_status=529)
            opened = lambda: alert_rows(ctx, alerts.BREAKER_OPENED)  # noqa: E731
            for n in (1, 2, 3):
                task = run(ctx, n)
                assert task.status == "succeeded" and task.provider == "ollama", task.reason  # the next rung
                if opened():
                    break
            wait_for("the breaker to open", opened, timeout=60)
            sim(server, "claude", error_rate=0.0)
            time.sleep(OPEN_S)
            closed = lambda: alert_rows(ctx, alerts.BREAKER_CLOSED)  # noqa: E731
            for n in (1, 2, 3, 1, 2, 3):  # the half-open probe succeeds on the first that goes to claude
                run(ctx, n)
                if closed():
                    break
            wait_for("the breaker to close", closed, timeout=60)
            wait_for("both breaker alerts", lambda: receiver.with_title("closed again"), timeout=120)
            run(ctx, 2)  # more spend in the same window, the breaker closed: nothing new to tell
            time.sleep(3)  # three sender rounds
        finally:
            sim(server, "claude", error_rate=0.0)

    assert len(receiver.with_title("all/day reached its alert line")) == 1
    assert len(receiver.with_title("Breaker of claude opened")) == 1
    assert len(receiver.with_title("Breaker of claude closed again")) == 1
    assert [status for _, status in receiver.seen[:2]] == [500, 500]
    rows = alert_rows(ctx)
    assert {r.cause for r in rows} == {alerts.BUDGET_ALERT, alerts.BREAKER_OPENED, alerts.BREAKER_CLOSED}
    assert len(rows) == 3 and all(r.state == "delivered" for r in rows)
    assert sum(r.attempts for r in rows) == 5  # two 500s, then each one delivered once
    assert len(receiver.took) == 3


def test_a_receiver_that_holds_every_post_never_slows_a_task(
    tmp_path: Path, server: BackgroundSimulator, redis_url: str, postgres_url: str, processes: Processes
) -> None:
    hold_s = 25.0
    with receiving(delay_s=hold_s) as receiver:
        ctx = fleet_context(tmp_path, server, redis_url, postgres_url, receiver)
        start_fleet(ctx, processes, tmp_path)
        first = run(ctx, 1)  # crosses the alert line: the alert is recorded with its hold, not sent by the task
        assert first.status == "succeeded"
        wait_for("the sender's post to arrive", lambda: receiver.arrived, timeout=120)
        posted = receiver.arrived[0]

        started = time.monotonic()
        second = run(ctx, 2)  # runs while the sender waits on the receiver, in the same worker process
        held_s = time.monotonic() - started
        assert second.status == "succeeded"
        assert receiver.seen == [], "the receiver answered before the task finished: the test proves nothing"
        assert time.monotonic() - posted < hold_s
        wait_for("the alert delivered", lambda: alert_rows(ctx, alerts.BUDGET_ALERT)[0].state == "delivered", 120)

        started = time.monotonic()
        assert run(ctx, 3).status == "succeeded"  # the same task with the receiver idle
        idle_s = time.monotonic() - started
        print(f"a task while the receiver held the alert: {held_s:.1f}s; with the receiver idle: {idle_s:.1f}s")
        assert held_s < max(3 * idle_s, idle_s + 5.0)
    assert len(receiver.took) == 1
