"""The ledger's fast path against real databases: statements run on the driver's cursor convert values and
wrap errors exactly as SQLAlchemy does, counters the ledger remembers as existing are made again when
they are gone (a database made anew under the same URL), on SQLite and PostgreSQL, and the connection the
ledger keeps is replaced when the database drops it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from conftest import REPO, patient
from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.exc import IntegrityError

from routing.ledger import Ledger
from store import repo
from store.db import KEEP_MAX, dispose_all, get_engine, held_connection, session_scope
from store.migrate import ensure_schema
from store.models import BudgetCounter, Spend
from store.prepared import run
from switchyard.fleet import BudgetConfig, load_fleet

FLEET = load_fleet(REPO / "switchyard.toml").model_copy(
    update={"budgets": [BudgetConfig(scope="all", window="day", cap_usd=1.0)]}
)
PLACE = {"provider": "claude", "model": "m", "group": "pr_review", "environment": "dev1", "stage": "dev"}
AT = datetime(2026, 3, 10, 12, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    database: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    ensure_schema(database)
    with session_scope(database) as session:
        for task_id in ("a", "b"):
            repo.create_task(
                session, task_id=task_id, kind="pr_review", group="pr_review", environment="dev1", stage="dev",
                title="", payload={},
            )  # fmt: skip
    yield database
    dispose_all()


def used_today(url: str) -> int:
    (state,) = Ledger(url, FLEET, now=lambda: AT).budgets(environment="dev1", stage="dev", group="pr_review")
    return state.used_micros


def test_prepared_statements_read_and_write_what_sqlalchemy_does(url: str) -> None:
    row = {"task_id": "a", "attempt": 1, **PLACE, "state": "held", "held_micros": 7, "charged_micros": 0}
    row |= {"created_at": AT, "settled_at": None, "budget_keys": [["all", "*", "day", AT.isoformat()]]}
    query = select(Spend.created_at, Spend.budget_keys, Spend.settled_at, Spend.held_micros)
    with get_engine(url).begin() as conn:
        run(conn, insert(Spend), row, columns=tuple(sorted(row)))  # PostgreSQL answers the new id, SQLite nothing
        fast = run(conn, query)
        assert fast == [tuple(found) for found in conn.execute(query)]
    (created, keys, settled, held) = fast[0]
    assert (created.replace(tzinfo=UTC), keys, settled, held) == (AT, row["budget_keys"], None, 7)


def test_driver_errors_come_back_as_sqlalchemys(url: str) -> None:
    row = {"task_id": "no-such-task", "attempt": 1, **PLACE, "state": "held", "held_micros": 1, "charged_micros": 0}
    row |= {"created_at": AT, "settled_at": None, "budget_keys": None}
    with pytest.raises(IntegrityError), get_engine(url).begin() as conn:
        run(conn, insert(Spend), row, columns=tuple(sorted(row)))


def test_a_counter_gone_from_under_the_ledger_is_made_again(url: str) -> None:
    ledger = Ledger(url, FLEET, now=lambda: AT)
    ledger.hold(task_id="a", attempt=1, micros=100_000, **PLACE)  # the ledger now knows the counter exists
    with session_scope(url) as session:
        session.execute(delete(BudgetCounter))  # as if the database had been made anew, with this spend row
    ledger.hold(task_id="b", attempt=1, micros=50_000, **PLACE)
    assert used_today(url) == 150_000  # made again from the spend rows, then raised once
    ledger.settle(task_id="a", attempt=1, charged_micros=10_000, price_version=None)
    assert used_today(url) == 60_000


def test_a_kept_connection_the_database_dropped_is_replaced_without_a_refusal(postgres_url: str) -> None:
    """The ledger keeps one connection per thread (no pool checkout or pre-ping per hold); when PostgreSQL
    drops it (a restart, an administrator), the next settle finds it dead, takes a new one and still settles:
    once, because settling is idempotent on (task, attempt)."""
    url = postgres_url
    ensure_schema(url)
    with session_scope(url) as session:
        repo.create_task(
            session, task_id="a", kind="pr_review", group="pr_review", environment="dev1", stage="dev", title="",
            payload={},
        )  # fmt: skip
    ledger = Ledger(url, FLEET, now=lambda: AT)
    ledger.hold(task_id="a", attempt=1, micros=100_000, **PLACE)
    kept = held_connection(url)
    backend = kept.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    kept.rollback()
    admin = url.replace("postgresql+psycopg", "postgresql").rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", [backend]).fetchone() == (True,)

    ledger.settle(task_id="a", attempt=1, charged_micros=40_000, price_version="v1")

    assert held_connection(url) is not kept
    assert used_today(url) == 40_000
    ledger.settle(task_id="a", attempt=1, charged_micros=40_000, price_version="v1")
    assert used_today(url) == 40_000


def test_threads_keep_a_connection_each_up_to_a_limit_and_give_it_back_when_they_end(sqlite_url: str) -> None:
    ensure_schema(sqlite_url)
    count = KEEP_MAX + 3
    gate = threading.Barrier(count)
    got: list[Connection | None] = [None] * count
    again: list[Connection | None] = [None] * count
    errors: list[BaseException] = []
    wait_s = patient(60)  # for the threads to start, connect and end: slow on a loaded machine

    def keep(i: int) -> None:  # asserts run in the test's thread: a failed one here would only be a warning
        try:
            got[i] = held_connection(sqlite_url)
            again[i] = held_connection(sqlite_url)
            gate.wait(timeout=wait_s)  # all hold theirs at once, so that only KEEP_MAX of them can keep one
        except BaseException as exc:
            errors.append(exc)
            raise

    threads = [threading.Thread(target=keep, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=wait_s)
    assert not [thread for thread in threads if thread.is_alive()], f"threads still running after {wait_s:.0f} s"
    assert errors == []
    assert again == got  # the same one on every call of the thread
    kept = [conn for conn in got if conn is not None]
    assert len(kept) == KEEP_MAX  # the others used the pool
    assert all(not conn.closed for conn in kept)

    mine = held_connection(sqlite_url)  # a new thread keeps one: those of the threads that ended are closed
    assert mine is not None
    assert all(conn.closed for conn in kept)
    dispose_all()
    assert mine.closed
