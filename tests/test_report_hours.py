"""The hourly roll-up (``report_hours``) stays equal to its recomputation from the raw rows: under threads
holding, starting, answering, settling and releasing attempts at once through the real ledger, on SQLite and
PostgreSQL; after migration 0014 fills it from rows written before it; and ``switchyard db check-rollup`` says so
(and sees a roll-up that drifted)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import postgres_database
from report_kit import Job, Try, fleet, write
from sqlalchemy import func, select, text

from routing.ledger import Ledger
from store import repo
from store.db import dispose_all, get_engine, session_scope
from store.migrate import ensure_schema, upgrade
from store.models import ReportHour
from store.report_hours import differences
from switchyard.usage import Usage

FLEET = fleet()
THREADS, TASKS, ATTEMPTS = 6, 24, 3
USAGE = Usage(input_tokens=1000, output_tokens=500)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hours.db'}"
        ensure_schema(url)
        yield url
        dispose_all()
        return
    with postgres_database() as url:
        ensure_schema(url)
        yield url


def _work(url: str, ledger: Ledger, task_id: str, seed: int) -> None:
    """Every attempt of one task as a worker makes it (held, started, answered, settled or released), with a
    duplicate hold or settle now and then, as a redelivery would."""
    rng = random.Random(seed)
    for number in range(1, ATTEMPTS + 1):
        provider = rng.choice(["claude", "codex", "ollama"])
        place = {"group": "pr_review", "environment": "dev1", "stage": "dev"}
        ledger.hold(task_id=task_id, attempt=number, provider=provider, model="m", micros=20_000, **place)
        with session_scope(url) as session:
            repo.begin_attempt(session, task_id=task_id, attempt=number, provider=provider, model="m", transport="api")
        usage = Usage(input_tokens=rng.randint(0, 900), output_tokens=rng.randint(0, 300), compute_seconds=1.25)
        status = "succeeded" if number == ATTEMPTS else "failed"
        cost = rng.choice([0, 1_234, 15_000])
        with session_scope(url) as session:
            repo.finish_attempt(session, task_id=task_id, attempt=number, status=status, usage=usage, cost_micros=cost)
        if rng.random() < 0.3:
            ledger.release(task_id=task_id, attempt=number, reason="test")
        else:
            ledger.settle(task_id=task_id, attempt=number, charged_micros=cost, price_version="p@1")
        if rng.random() < 0.3:  # a redelivery settles again: nothing moves
            ledger.settle(task_id=task_id, attempt=number, charged_micros=cost, price_version="p@1")


def test_threads_settling_at_once_leave_the_rollup_equal_to_the_raw_rows(database_url: str) -> None:
    with session_scope(database_url) as session:
        ids = write(session, FLEET, [Job(kind="pr_review") for _ in range(TASKS)])
    ledger = Ledger(database_url, FLEET)
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda pair: _work(database_url, ledger, *pair), [(task, i) for i, task in enumerate(ids)]))
    with get_engine(database_url).begin() as conn:
        assert differences(conn) == []
        attempts, tasks, cost = conn.execute(
            select(func.sum(ReportHour.attempts), func.sum(ReportHour.tasks), func.sum(ReportHour.cost_micros))
        ).one()
        settled = conn.execute(text("SELECT COALESCE(SUM(charged_micros), 0) FROM spend WHERE state = 'settled'"))
        assert (attempts, tasks, cost) == (TASKS * ATTEMPTS, TASKS, settled.scalar_one())


def test_a_rollup_that_drifted_is_found(database_url: str) -> None:
    with session_scope(database_url) as session:
        write(session, FLEET, [Job(tries=[Try("claude", USAGE)])])
    with get_engine(database_url).begin() as conn:
        assert differences(conn) == []
        conn.execute(text("UPDATE report_hours SET cost_micros = cost_micros + 1"))
        [line] = differences(conn)
        assert "'provider': 'claude'" in line and "kept" in line and "raw" in line


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migration_0014_fills_the_rollup_from_the_rows_before_it(request: pytest.FixtureRequest, kind: str) -> None:
    url: str = request.getfixturevalue("sqlite_url" if kind == "sqlite" else "postgres_url")
    upgrade(url, "0012")
    at = datetime(2026, 11, 15, 10, 30, tzinfo=UTC)
    jobs = [
        Job(tries=[Try("claude", USAGE, at), Try("codex", USAGE, at + timedelta(hours=1))]),
        Job(tries=[Try("ollama", USAGE, at, ledgered=False)]),
        Job(tries=[Try("claude", USAGE, at, state="released")]),
    ]
    engine = get_engine(url)
    with engine.begin() as conn:
        for table in ("tasks", "attempts", "spend"):
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0  # noqa: S608
    with session_scope(url) as session:
        write(session, FLEET, jobs)
    upgrade(url)
    with engine.begin() as conn:
        assert differences(conn) == []
        rows = conn.execute(select(func.count(), func.sum(ReportHour.attempts), func.sum(ReportHour.tasks))).one()
    assert tuple(rows) == (3, 4, 3)  # claude 10:00 (two attempts of two tasks), codex 11:00, ollama 10:00
    dispose_all()


def test_db_check_rollup_says_so_and_rebuilds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli import main

    url = f"sqlite:///{tmp_path / 'checked.db'}"
    monkeypatch.setenv("SWITCHYARD_HOME", str(tmp_path))
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", url)
    monkeypatch.setenv("SWITCHYARD_FLEET_FILE", str(Path(__file__).resolve().parent.parent / "switchyard.toml"))

    def check(*args: str) -> tuple[int, str]:
        code = main(["db", "check-rollup", *args])
        out = capsys.readouterr()
        dispose_all()
        return code, out.out + out.err

    assert check() == (0, "report_hours matches the raw rows\n")
    with session_scope(url) as session:
        write(session, FLEET, [Job(tries=[Try("claude", USAGE)])])
    with get_engine(url).begin() as conn:
        conn.execute(text("UPDATE report_tasks SET attempts = 5"))
    dispose_all()
    code, said = check()
    assert code == 1 and "task task-" in said and "fix with --rebuild" in said, said
    code, said = check("--rebuild")
    assert code == 0 and "1 row(s) differed before" in said, said
    assert check() == (0, "report_hours matches the raw rows\n")
