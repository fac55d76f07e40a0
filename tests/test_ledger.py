"""The budget ledger against real databases: atomic holds across budgets, settlement, idempotency on
(task, attempt), alerts once per window, the sweeper, overrides read on every hold, failing closed, and the
concurrency proof: 200 attempts holding against one budget near its cap at once never pass it, on SQLite and
on PostgreSQL (threads, and several processes)."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Processes
from sqlalchemy import func, select

import celeryconfig
from routing.ledger import Hold, Ledger
from store import repo
from store.costs import UNKNOWN_COST, budget_status
from store.db import dispose_all, session_scope
from store.migrate import ensure_schema
from store.models import BudgetCounter, Spend
from switchyard.budgets import CounterKey
from switchyard.errors import BudgetRefused, InputError, LedgerUnavailable, NotFound
from switchyard.fleet import BudgetConfig, Fleet, load_fleet
from switchyard.settings import Settings
from tasks.app import app
from tasks.maintenance import hold_age_limit
from workers.services import build_specs

FILE_FLEET = load_fleet(REPO / "switchyard.toml")
PLACE = {"provider": "claude", "model": "claude-sonnet-5", "group": "pr_review", "environment": "dev1", "stage": "dev"}
START = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)


class Clock:
    def __init__(self, at: datetime = START) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    database: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    ensure_schema(database)
    yield database
    dispose_all()


def fleet_with(*budgets: BudgetConfig) -> Fleet:
    return FILE_FLEET.model_copy(update={"budgets": list(budgets)})


def make_tasks(url: str, count: int, prefix: str = "t") -> list[str]:
    ids = [f"{prefix}{i}" for i in range(count)]
    with session_scope(url) as session:
        for task_id in ids:
            repo.create_task(
                session, task_id=task_id, kind="pr_review", group="pr_review", environment="dev1", stage="dev",
                title="", payload={},
            )  # fmt: skip
    return ids


def hold(ledger: Ledger, task_id: str, micros: int, attempt: int = 1, **place: str) -> Hold:
    return ledger.hold(task_id=task_id, attempt=attempt, micros=micros, **{**PLACE, **place})


def used(ledger: Ledger, **place: str) -> dict[str, int]:
    where = {k: v for k, v in {**PLACE, **place}.items() if k != "model"}
    return {f"{b.scope}={b.target}/{b.window}": b.used_micros for b in ledger.budgets(**where)}


def spend(url: str, task_id: str, attempt: int = 1) -> Spend:
    with session_scope(url) as session:
        return session.execute(select(Spend).where(Spend.task_id == task_id, Spend.attempt == attempt)).scalar_one()


def counters_total(url: str) -> dict[tuple[str, str, str, str], tuple[int, int]]:
    with session_scope(url) as session:
        rows = session.scalars(select(BudgetCounter)).all()
        return {(r.scope, r.target, r.window, str(r.window_start)[:16]): (r.used_micros, r.held_micros) for r in rows}


# --- hold, settle, release ----------------------------------------------------------------------------


def test_a_hold_counts_on_every_budget_that_applies_and_settles_to_the_real_cost(url: str) -> None:
    fleet = fleet_with(
        BudgetConfig(scope="all", window="day", cap_usd=1.0),
        BudgetConfig(scope="provider", window="hour", cap_usd=0.5),
        BudgetConfig(scope="group", target="pr_review", window="month", cap_usd=0.8),
        BudgetConfig(scope="environment", target="dev2", window="day", cap_usd=0.1),  # not this place
    )
    ledger = Ledger(url, fleet, now=Clock())
    (task,) = make_tasks(url, 1)
    held = hold(ledger, task, 200_000)
    assert (held.state, held.held_micros, held.reused) == ("held", 200_000, False)
    assert held.budgets == ("all/day", "group=pr_review/month", "provider=claude/hour")
    assert used(ledger) == {"all=*/day": 200_000, "group=pr_review/month": 200_000, "provider=claude/hour": 200_000}
    assert used(ledger, provider="codex")["provider=codex/hour"] == 0

    ledger.settle(task_id=task, attempt=1, charged_micros=55_555, price_version="claude/x@2026-01-01")
    assert set(used(ledger).values()) == {55_555}
    row = spend(url, task)
    assert (row.state, row.charged_micros, row.held_micros, row.price_version) == (
        "settled",
        55_555,
        200_000,
        "claude/x@2026-01-01",
    )
    assert {held for _, held in counters_total(url).values()} == {0}
    with session_scope(url) as session:  # the report (budget list, /api/budgets) says what the counters say
        report = {
            (r["scope"], r["target"], r["window"]): r["used_micros"] for r in budget_status(session, fleet, now=START)
        }
    assert report[("all", "*", "day")] == report[("provider", "claude", "hour")] == 55_555
    assert report[("environment", "dev2", "day")] == 0


def test_a_refused_hold_changes_nothing_on_any_budget(url: str) -> None:
    fleet = fleet_with(
        BudgetConfig(scope="all", window="day", cap_usd=10.0),
        BudgetConfig(scope="provider", target="claude", window="day", cap_usd=0.3, action="degrade"),
    )
    ledger = Ledger(url, fleet, now=Clock())
    first, second = make_tasks(url, 2)
    hold(ledger, first, 200_000)
    with pytest.raises(BudgetRefused) as refused:
        hold(ledger, second, 150_000)
    error = refused.value
    assert (error.budget, error.cap_micros, error.used_micros, error.amount_micros) == (
        "provider=claude/day",
        300_000,
        200_000,
        150_000,
    )
    assert error.action == "degrade" and error.window_ends_in_s == 11.5 * 3600
    assert used(ledger) == {"all=*/day": 200_000, "provider=claude/day": 200_000}  # all/day had room: untouched
    with session_scope(url) as session:
        assert session.scalar(select(func.count()).select_from(Spend)) == 1
    assert hold(ledger, second, 100_000).held_micros == 100_000  # exactly at the cap fits


def test_holds_settles_and_releases_are_idempotent_on_task_and_attempt(url: str) -> None:
    ledger = Ledger(url, fleet_with(BudgetConfig(scope="all", window="day", cap_usd=1.0)), now=Clock())
    a, b = make_tasks(url, 2)
    assert not hold(ledger, a, 300_000).reused
    again = hold(ledger, a, 999_999)  # a redelivered attempt: the first hold, nothing counted again
    assert (again.reused, again.held_micros, again.state) == (True, 300_000, "held")
    assert used(ledger) == {"all=*/day": 300_000}
    ledger.settle(task_id=a, attempt=1, charged_micros=100_000, price_version="v1")
    ledger.settle(task_id=a, attempt=1, charged_micros=900_000, price_version="v2")
    assert used(ledger) == {"all=*/day": 100_000} and spend(url, a).price_version == "v1"
    assert hold(ledger, a, 300_000).state == "settled"  # charged already: the caller must not call again
    assert ledger.release(task_id=a, attempt=1, reason="too late") is False
    assert used(ledger) == {"all=*/day": 100_000}

    hold(ledger, b, 400_000)
    assert ledger.release(task_id=b, attempt=1, reason="call failed") is True
    assert ledger.release(task_id=b, attempt=1, reason="call failed") is False
    assert used(ledger) == {"all=*/day": 100_000} and spend(url, b).state == "released"
    rehold = hold(ledger, b, 250_000)  # a released attempt held anew (its worker was swept, then came back)
    assert (rehold.reused, rehold.state, rehold.held_micros) == (False, "held", 250_000)
    assert used(ledger) == {"all=*/day": 350_000}
    assert ledger.release(task_id=b, attempt=2, reason="never held") is False
    with pytest.raises(NotFound, match="has no hold to settle"):
        ledger.settle(task_id=b, attempt=2, charged_micros=1, price_version=None)


def test_concurrent_twins_of_one_hold_count_once(url: str) -> None:
    ledger = Ledger(url, fleet_with(BudgetConfig(scope="all", window="day", cap_usd=1.0)), now=Clock())
    (task,) = make_tasks(url, 1)
    results = run_at_once(20, lambda _: hold(ledger, task, 100_000))
    assert [type(r) for r in results] == [Hold] * 20
    assert sum(not r.reused for r in results if isinstance(r, Hold)) == 1
    assert used(ledger) == {"all=*/day": 100_000}


def test_settling_after_the_window_rolled_over_adjusts_the_window_of_the_hold(url: str) -> None:
    clock = Clock(datetime(2026, 3, 10, 12, 59, 59, tzinfo=UTC))
    ledger = Ledger(url, fleet_with(BudgetConfig(scope="all", window="hour", cap_usd=1.0)), now=clock)
    a, b = make_tasks(url, 2)
    hold(ledger, a, 500_000)
    hold(ledger, b, 300_000)
    clock.at += timedelta(seconds=2)
    assert used(ledger) == {"all=*/hour": 0}  # a new hour
    ledger.settle(task_id=a, attempt=1, charged_micros=200_000, price_version=None)
    ledger.release(task_id=b, attempt=1, reason="failed")
    assert used(ledger) == {"all=*/hour": 0}
    clock.at -= timedelta(seconds=2)
    assert used(ledger) == {"all=*/hour": 200_000}


def test_a_settle_after_a_release_still_records_the_real_cost(url: str) -> None:
    ledger = Ledger(url, fleet_with(BudgetConfig(scope="all", window="day", cap_usd=1.0)), now=Clock())
    (task,) = make_tasks(url, 1)
    hold(ledger, task, 500_000)
    ledger.release(task_id=task, attempt=1, reason="swept")
    ledger.settle(task_id=task, attempt=1, charged_micros=123_000, price_version="v")
    assert used(ledger) == {"all=*/day": 123_000}
    assert spend(url, task).state == "settled"


def test_a_named_budget_beats_the_wildcard_on_the_same_counter(url: str) -> None:
    fleet = fleet_with(
        BudgetConfig(scope="provider", window="day", cap_usd=0.1),
        BudgetConfig(scope="provider", target="claude", window="day", cap_usd=2.0),
    )
    ledger = Ledger(url, fleet, now=Clock())
    a, b = make_tasks(url, 2)
    hold(ledger, a, 1_000_000)  # claude's own cap applies, not the 0.1 of every provider
    with pytest.raises(BudgetRefused, match="provider=codex/day"):
        hold(ledger, b, 200_000, provider="codex")
    states = {(s.target, s.cap_micros) for s in ledger.budgets(environment="dev1", stage="dev", group="pr_review")}
    assert states == {("claude", 2_000_000), ("codex", 100_000), ("ollama", 100_000)}


def test_a_free_call_passes_a_full_budget(url: str) -> None:
    ledger = Ledger(url, fleet_with(BudgetConfig(scope="all", window="day", cap_usd=0.1)), now=Clock())
    a, b = make_tasks(url, 2)
    hold(ledger, a, 100_000)
    assert hold(ledger, b, 0, provider="ollama").state == "held"
    ledger.settle(task_id=b, attempt=1, charged_micros=0, price_version=None)
    assert used(ledger) == {"all=*/day": 100_000}


def test_bad_amounts_and_unknown_tasks_are_refused(url: str) -> None:
    ledger = Ledger(url, fleet_with(BudgetConfig(scope="all", window="day", cap_usd=1.0)), now=Clock())
    with pytest.raises(InputError, match="zero or more"):
        hold(ledger, "t0", -1)
    with pytest.raises(NotFound, match="no such task"):
        hold(ledger, "missing", 10)
    assert used(ledger) == {"all=*/day": 0}


# --- alerts, sweeping, overrides ----------------------------------------------------------------------


def test_an_alert_is_recorded_once_per_window(url: str, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    fleet = fleet_with(BudgetConfig(scope="all", window="day", cap_usd=1.0, alert_usd=0.3))
    ledger = Ledger(url, fleet, now=clock)
    tasks = make_tasks(url, 5)
    caplog.set_level(logging.WARNING, logger="routing.ledger")
    hold(ledger, tasks[0], 200_000)
    assert ledger.alerts() == []
    hold(ledger, tasks[1], 200_000)  # 0.4 >= 0.3: crossed
    hold(ledger, tasks[2], 200_000)
    (alert,) = ledger.alerts()
    assert (alert.budget, alert.used_micros, alert.alert_micros, alert.cap_micros, alert.task_id) == (
        "all/day",
        400_000,
        300_000,
        1_000_000,
        tasks[1],
    )
    assert alert.window_start == datetime(2026, 3, 10, tzinfo=UTC)
    assert len([r for r in caplog.records if "reached its alert line" in r.getMessage()]) == 1
    clock.at += timedelta(days=1)
    hold(ledger, tasks[3], 100_000)
    ledger.settle(task_id=tasks[3], attempt=1, charged_micros=350_000, price_version=None)  # a charge crosses
    assert [(a.task_id, a.used_micros) for a in ledger.alerts()] == [(tasks[1], 400_000), (tasks[3], 350_000)]
    assert [a.task_id for a in ledger.alerts(since=clock.at)] == [tasks[3]]


def test_the_sweeper_releases_holds_of_dead_workers(url: str) -> None:
    clock = Clock()
    ledger = Ledger(url, fleet_with(BudgetConfig(scope="all", window="month", cap_usd=1.0)), now=clock)
    old, ended, fresh = make_tasks(url, 3)
    hold(ledger, old, 100_000)
    clock.at += timedelta(minutes=20)
    hold(ledger, ended, 200_000)
    hold(ledger, fresh, 400_000)
    with session_scope(url) as session:
        repo.finish_task(session, task_id=ended, status="failed", reason="crashed before settling")
    assert ledger.sweep(older_than=timedelta(minutes=16)) == 2
    assert [spend(url, t).state for t in (old, ended, fresh)] == ["released", "released", "held"]
    assert used(ledger) == {"all=*/month": 400_000}
    assert ledger.sweep(older_than=timedelta(minutes=16)) == 0


def test_the_sweeper_ends_a_hold_as_its_attempt_says(url: str) -> None:
    clock = Clock()
    ledger = Ledger(url, fleet_with(BudgetConfig(scope="all", window="month", cap_usd=1.0)), now=clock)
    left_open, answered, never_began = make_tasks(url, 3, prefix="s")
    for task_id in (left_open, answered, never_began):
        hold(ledger, task_id, 100_000)
    with session_scope(url) as session:
        for task_id in (left_open, answered):
            repo.begin_attempt(session, task_id=task_id, attempt=1, provider="claude", model="m", transport="api")
        repo.finish_attempt(
            session, task_id=answered, attempt=1, status="answered", cost_micros=1_234, price_version="v1", answer="ok"
        )
    clock.at += timedelta(minutes=20)
    assert ledger.sweep(older_than=timedelta(minutes=16)) == 3
    ended = {t: (spend(url, t).state, spend(url, t).charged_micros) for t in (left_open, answered, never_began)}
    assert ended == {left_open: ("settled", 100_000), answered: ("settled", 1_234), never_began: ("released", 0)}
    assert spend(url, left_open).price_version == UNKNOWN_COST  # never $0 for a call that may have been paid
    assert used(ledger) == {"all=*/month": 101_234}


def test_an_unknown_cost_takes_the_real_cost_once_it_is_known(url: str) -> None:
    """The sweep charged a call left open at its hold; the answer had waited in the state Redis, and the
    redelivery settles it at its real cost: the charge and the counters follow, once."""
    ledger = Ledger(url, fleet_with(BudgetConfig(scope="all", window="month", cap_usd=1.0)), now=Clock())
    (task_id,) = make_tasks(url, 1, prefix="u")
    hold(ledger, task_id, 100_000)
    assert ledger.close_open_call(task_id=task_id, attempt=1).held
    assert (spend(url, task_id).charged_micros, used(ledger)) == (100_000, {"all=*/month": 100_000})
    ledger.settle(task_id=task_id, attempt=1, charged_micros=1_234, price_version="v1")
    row = spend(url, task_id)
    assert (row.state, row.charged_micros, row.price_version) == ("settled", 1_234, "v1")
    assert used(ledger) == {"all=*/month": 1_234}
    ledger.settle(task_id=task_id, attempt=1, charged_micros=1_234, price_version="v1")  # a second settle: nothing
    ledger.close_open_call(task_id=task_id, attempt=1)  # nor a late close: the known cost stands
    assert (spend(url, task_id).price_version, used(ledger)) == ("v1", {"all=*/month": 1_234})


def test_an_override_applies_on_the_next_hold_without_a_restart(url: str) -> None:
    worker = Ledger(url, FILE_FLEET, now=Clock())  # the file: $50 a day, $10 an hour
    operator = Ledger(url, FILE_FLEET, now=Clock())
    a, b, c = make_tasks(url, 3)
    hold(worker, a, 40_000)
    operator.set_budget(scope="all", window="day", cap_usd=0.05)
    with pytest.raises(BudgetRefused, match="all/day"):
        hold(worker, b, 20_000)
    operator.set_budget(scope="all", window="day", cap_usd=0.07)
    hold(worker, b, 20_000)
    added = operator.set_budget(scope="provider", target="claude", window="hour", cap_usd=0.065, action="degrade")
    assert (added.source, added.cap_micros, added.action) == ("override", 65_000, "degrade")
    with pytest.raises(BudgetRefused, match="provider=claude/hour"):
        hold(worker, c, 10_000)
    budgets = {(b.scope, b.target, b.window): b for b in worker.effective_budgets()}
    assert budgets[("all", "*", "day")].alert_micros is None  # the file's $40 alert is above the new cap
    assert budgets[("all", "*", "hour")].source == "file"


def test_overrides_are_checked_against_the_fleet(url: str) -> None:
    ledger = Ledger(url, FILE_FLEET)
    bad = {
        "unknown scope 'team'": {"scope": "team"},
        "unknown window 'week'": {"window": "week"},
        "--cap must be": {"cap_usd": -1.0},
        "--alert 2.0 is above --cap 1.0": {"alert_usd": 2.0},
        "unknown environment 'dev9'": {"scope": "environment", "target": "dev9"},
        "unknown provider 'gemini'": {"scope": "provider", "target": "gemini"},
        "scope 'all' takes no --target": {"target": "dev1"},
        "unknown action 'warn'": {"action": "warn"},
    }
    for message, change in bad.items():
        args: dict[str, Any] = {"scope": "all", "window": "day", "cap_usd": 1.0, **change}
        with pytest.raises(InputError, match=message):
            ledger.set_budget(**args)
    assert {b.source for b in ledger.effective_budgets()} == {"file"}


# --- failing closed -----------------------------------------------------------------------------------


def test_an_unreachable_ledger_fails_closed_without_the_password() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ledger = Ledger(f"postgresql+psycopg://someone:s3cret@127.0.0.1:{port}/x?connect_timeout=2", FILE_FLEET)
    with pytest.raises(LedgerUnavailable) as caught:
        hold(ledger, "t0", 1)
    assert "s3cret" not in str(caught.value) and "nothing is spent" in str(caught.value)
    with pytest.raises(LedgerUnavailable):
        ledger.budgets(environment="dev1", stage="dev", group="pr_review", provider="claude")
    with pytest.raises(LedgerUnavailable):
        ledger.settle(task_id="t0", attempt=1, charged_micros=1, price_version=None)


def test_a_ledger_without_its_tables_fails_closed(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url, FILE_FLEET)  # schema never migrated: every statement fails
    with pytest.raises(LedgerUnavailable, match="could not hold"):
        hold(ledger, "t0", 1)


# --- the concurrency proof ----------------------------------------------------------------------------

HOLD_MICROS = 10_000
FITS = 150
ATTEMPTS = 200


def run_at_once(count: int, work: Any) -> list[Any]:
    """``work(i)`` on ``count`` threads released together; each result, or the exception it raised."""
    barrier = threading.Barrier(count)

    def run(i: int) -> Any:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(run, i) for i in range(count)]
        wait(futures, timeout=120)
    return [future.exception() or future.result() for future in futures]


def test_200_concurrent_holds_never_pass_the_cap(url: str) -> None:
    fleet = fleet_with(BudgetConfig(scope="all", window="day", cap_usd=FITS * HOLD_MICROS / 1e6))
    ledger = Ledger(url, fleet)
    tasks = make_tasks(url, ATTEMPTS)
    results = run_at_once(ATTEMPTS, lambda i: hold(ledger, tasks[i], HOLD_MICROS))
    admitted = [r for r in results if isinstance(r, Hold)]
    others = [r for r in results if not isinstance(r, Hold | BudgetRefused)]
    assert others == []
    assert FITS * 0.95 <= len(admitted) <= FITS
    with session_scope(url) as session:
        held = session.scalar(select(func.sum(Spend.held_micros)).where(Spend.state == "held"))
    cap = FITS * HOLD_MICROS
    assert held == len(admitted) * HOLD_MICROS <= cap
    assert list(counters_total(url).values()) == [(held, held)]

    charges = {r.task_id: HOLD_MICROS - i for i, r in enumerate(admitted)}
    settled = run_at_once(
        len(admitted),
        lambda i: ledger.settle(
            task_id=admitted[i].task_id, attempt=1, charged_micros=charges[admitted[i].task_id], price_version=None
        ),
    )
    assert settled == [None] * len(admitted)
    with session_scope(url) as session:
        charged = session.scalar(select(func.sum(Spend.charged_micros)))
    assert charged == sum(charges.values()) <= cap
    assert list(counters_total(url).values()) == [(charged, 0)]


HOLDER = """
import json, pathlib, sys, time
from concurrent.futures import ThreadPoolExecutor
from routing.ledger import Ledger
from switchyard.errors import BudgetRefused
from switchyard.fleet import load_fleet
url, start_at = sys.argv[1], float(sys.argv[2])
first, count, micros = (int(arg) for arg in sys.argv[3:6])
ledger = Ledger(url, load_fleet(pathlib.Path("switchyard.toml")))
outcomes = []
def run(i):
    try:
        ledger.hold(task_id=f"t{i}", attempt=1, provider="claude", model="m", group="pr_review",
                    environment="dev1", stage="dev", micros=micros)
        outcomes.append("held")
    except BudgetRefused:
        outcomes.append("refused")
    except Exception as exc:
        outcomes.append(f"{type(exc).__name__}: {exc}: {exc.__cause__}")
time.sleep(max(0.0, start_at - time.time()))
with ThreadPoolExecutor(8) as pool:  # 4 processes x 8 connections: well under PostgreSQL's 100 clients
    list(pool.map(run, range(first, first + count)))
print(json.dumps(outcomes))
"""


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_200_holds_from_four_processes_never_pass_the_cap(
    database: str, request: pytest.FixtureRequest, processes: Processes
) -> None:
    url: str = request.getfixturevalue("postgres_url" if database == "postgresql" else "sqlite_url")
    ensure_schema(url)
    make_tasks(url, ATTEMPTS)
    # the processes read the file's budgets overlaid by this override, from SQL
    Ledger(url, FILE_FLEET).set_budget(scope="all", window="day", cap_usd=FITS * HOLD_MICROS / 1e6)
    start_at = str(time.time() + 2)
    per = ATTEMPTS // 4
    procs = [
        processes.spawn(
            [sys.executable, "-c", HOLDER, url, start_at, str(p * per), str(per), str(HOLD_MICROS)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for p in range(4)
    ]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        outcomes += json.loads(out)
    assert set(outcomes) <= {"held", "refused"}, [o for o in outcomes if o not in ("held", "refused")]
    assert FITS * 0.95 <= outcomes.count("held") <= FITS
    with session_scope(url) as session:
        held = session.scalar(select(func.sum(Spend.held_micros)))
    assert held == outcomes.count("held") * HOLD_MICROS <= FITS * HOLD_MICROS
    dispose_all()


def test_counter_keys_round_trip_through_json() -> None:
    key = CounterKey("provider", "claude", "hour", datetime(2026, 3, 10, 12, tzinfo=UTC))
    assert CounterKey.from_json(key.to_json()) == key and key.label == "provider=claude/hour"


def test_the_sweeper_is_registered_scheduled_and_started_by_up(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    schedule = celeryconfig.build(settings, FILE_FLEET)["beat_schedule"]["sweep-holds"]
    assert (schedule["task"], schedule["schedule"]) == ("switchyard.maintenance.sweep_holds", 60.0)
    app.loader.import_default_modules()  # what a worker does at start: the app's include list
    assert schedule["task"] in app.tasks
    assert hold_age_limit(FILE_FLEET.limits.task_time_limit_s) == timedelta(seconds=900 + 60)
    (beat,) = [s for s in build_specs(settings, FILE_FLEET, simulate=False, base_env={}) if s.name == "beat"]
    assert beat.argv[beat.argv.index("beat") + 1 :][:2] == ("-s", str(settings.data_dir / "celerybeat-schedule"))
