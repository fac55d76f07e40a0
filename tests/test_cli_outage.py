"""A service that goes away in the middle of a CLI command: one line and exit 3, never a traceback.

The database is a private PostgreSQL cluster (ops/pgcluster.py) stopped between two commands of one process:
the first command brings the schema up (once per process), so the second meets the outage inside a query,
past every check made up front."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import IN_CI

from cli import main, service_away
from ops.pgcluster import PrivatePostgres, available
from store.db import dispose_all

pytestmark = pytest.mark.integration


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[PrivatePostgres]:
    if not available():
        message = "PostgreSQL's initdb and pg_ctl are not installed (/usr/lib/postgresql/*/bin)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    cluster = PrivatePostgres()
    try:
        cluster.start()
        yield cluster
    finally:
        dispose_all()
        cluster.close()


def test_the_database_stopping_between_commands_is_one_line_and_exit_3(
    pg: PrivatePostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", pg.database("outage"))
    assert main(["tasks", "list", "--json"]) == 0
    capsys.readouterr()

    pg.stop()
    assert main(["tasks", "list", "--json"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("switchyard: ServiceUnavailable: the database failed during the command (OperationalError")
    assert "Traceback" not in err and "SELECT" not in err  # the driver's line, not the statement
    assert len(err.strip().splitlines()) == 1


def test_an_error_that_names_no_service_keeps_its_traceback() -> None:
    assert service_away(ValueError("a bug")) is None
    assert service_away(KeyError("x")) is None
