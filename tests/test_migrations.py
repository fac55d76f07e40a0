"""The Alembic migrations build exactly the schema of store/models.py, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, inspect

from store.db import dispose_all, make_engine
from store.migrate import current, downgrade, ensure_schema, head, upgrade
from store.models import Base
from switchyard.errors import ServiceUnavailable

REPO = Path(__file__).resolve().parent.parent
TABLES = {"environments", "stages", "groups", "tasks", "attempts", "results", "spend", "breaker_transitions"}
TABLES |= {"promotions"}  # environments/promote.py (migration 0005)
TABLES |= {"budget_counters", "budget_overrides", "budget_alerts"}  # routing/ledger.py (migration 0002)
TABLES |= {"task_deps", "reviews", "merges"}  # the PR pipeline (migration 0004)
TABLES |= {"attempt_tries"}  # the tries inside an attempt (migration 0007)
TABLES |= {"outbox"}  # messages and follow-ups owed to the broker (migration 0009)
TABLES |= {"alerts"}  # alerts and their delivery state (migration 0010)
TABLES |= {"task_actions"}  # retries and cancels (migration 0011)
TABLES |= {"report_hours", "report_tasks"}  # the cost report's roll-ups (migration 0014)
TABLES |= {"api_tokens", "audit"}  # the status API's tokens and the audit of admin actions (migration 0013)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest) -> Iterator[str]:
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    yield url
    dispose_all()


def differences(url: str, metadata: MetaData = Base.metadata) -> list[Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_builds_exactly_the_models(fresh_url: str) -> None:
    assert current(fresh_url) is None
    upgrade(fresh_url)
    assert current(fresh_url) == head()
    assert tables(fresh_url) == TABLES | {"alembic_version"}
    assert differences(fresh_url) == []


def test_the_comparison_sees_drift(fresh_url: str) -> None:
    """A control for the test above: a model with a column the migrations lack is reported."""
    upgrade(fresh_url)
    drifted = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["tasks"].append_column(Column("priority", Integer, nullable=True))
    diffs = differences(fresh_url, drifted)
    assert [(d[0], d[3].name) for d in diffs] == [("add_column", "priority")]


def test_upgrade_twice_is_a_no_op(fresh_url: str) -> None:
    upgrade(fresh_url)
    ensure_schema(fresh_url)
    upgrade(fresh_url, "head")
    assert current(fresh_url) == head()
    assert differences(fresh_url) == []


def test_downgrade_to_base_and_up_again(fresh_url: str) -> None:
    upgrade(fresh_url)
    downgrade(fresh_url, "base")
    assert current(fresh_url) is None
    assert tables(fresh_url) == {"alembic_version"}
    upgrade(fresh_url)
    assert differences(fresh_url) == []


def test_upgrade_works_from_any_working_directory(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    upgrade(sqlite_url)
    assert current(sqlite_url) == head()
    assert list(elsewhere.iterdir()) == []


def test_two_processes_migrate_one_database_at_once(fresh_url: str) -> None:
    code = "import sys; from store.migrate import ensure_schema; ensure_schema(sys.argv[1])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, fresh_url], cwd=REPO, stderr=subprocess.PIPE) for _ in range(3)
    ]
    errors = [proc.communicate(timeout=60)[1].decode() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], errors
    assert current(fresh_url) == head()
    assert differences(fresh_url) == []


def test_sqlite_lock_file_sits_beside_the_database(sqlite_url: str, tmp_path: Path) -> None:
    ensure_schema(sqlite_url)
    assert (tmp_path / "switchyard.db.migrate.lock").exists()


def test_the_password_is_never_logged(
    postgres_url: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "hunter2-not-logged"  # the local server trusts every login, so any password connects
    url = postgres_url.replace("postgres@", f"postgres:{secret}@")
    caplog.set_level(logging.DEBUG)
    upgrade(url)
    assert current(url) == head()
    assert "Running upgrade" in caplog.text
    captured = capsys.readouterr()
    assert secret not in caplog.text + captured.out + captured.err


def test_an_unreachable_database_is_named_without_its_password() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ServiceUnavailable) as caught:
        upgrade(f"postgresql+psycopg://someone:s3cret@127.0.0.1:{port}/nothing?connect_timeout=2")
    assert "s3cret" not in str(caught.value)
    assert "someone:***@127.0.0.1" in str(caught.value)
