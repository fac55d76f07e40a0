"""How many SQL transactions one attempt of a real task costs (issue 13: at most four that write, and only
those take SQLite's write lock; reads go without it).

A ``pr_review`` runs as a worker runs it, in process (:func:`tasks.worker._execute`, the Celery task's body):
the lease taken with the claim (tasks/lease.py), then the attempt loop with the real router, ledger (SQLite),
shared breaker (Redis) and the simulator answering, then the task's end read back. The counts come
from SQLAlchemy's events (:func:`store.db.count_transactions`), every thread of this process included.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from celery import Task
from pipeline_kit import detail, make_context

from simulator.server import BackgroundSimulator
from store.db import TxnCount, count_transactions
from tasks import worker
from tasks.context import Context
from tasks.submit import submit

MOST_WRITING = 4  # claim + recovery, the attempt's row + hold, answer + settle, verdict + result + status


@pytest.fixture
def ctx(
    tmp_path: Path, server: BackgroundSimulator, redis_url: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Context]:
    made = make_context(tmp_path, server.url, redis_url, sqlite_url)
    monkeypatch.setattr(worker, "get_context", lambda: made)  # the worker's process context
    yield made
    worker.process_leases(made).close()


def one_attempt(ctx: Context) -> TxnCount:
    task_id = submit({"kind": "pr_review", "environment": "dev1", "branch": "feature/sample-2"}, context=ctx)
    with count_transactions() as count:
        status = worker.execute(cast(Task, None), task_id)  # the Celery task is only used to retry, which none does
    assert status == "succeeded"
    assert len(detail(ctx, task_id)["attempts"]) == 1
    return count


def test_one_attempt_writes_in_at_most_four_transactions(ctx: Context) -> None:
    one_attempt(ctx)  # the first run makes the budget counters (once per fleet); the second is the steady state
    count = one_attempt(ctx)
    assert count.writing <= MOST_WRITING, count.as_dict()
    assert count.writing >= 3, count.as_dict()  # the counter sees them: claim, hold, answer at the least


def test_only_writing_transactions_take_sqlites_write_lock(ctx: Context) -> None:
    one_attempt(ctx)
    count = one_attempt(ctx)
    assert count.transactions > count.writing, count.as_dict()  # reads happened, outside the lock
    assert count.locked <= MOST_WRITING, count.as_dict()
    assert count.locked == count.writing, count.as_dict()
