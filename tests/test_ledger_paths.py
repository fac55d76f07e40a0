"""The ledger's fast path against real databases: statements run on the driver's cursor convert values and
wrap errors exactly as SQLAlchemy does, and counters the ledger remembers as existing are made again when
they are gone (a database made anew under the same URL), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from conftest import REPO
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from routing.ledger import Ledger
from store import repo
from store.db import dispose_all, get_engine, session_scope
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
