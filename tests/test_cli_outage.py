"""A service that goes away in the middle of a CLI command: one line and exit 3, never a traceback.

The database is a private PostgreSQL cluster (ops/pgcluster.py) stopped between two commands of one process:
the first command brings the schema up (once per process), so the second meets the outage inside a query,
past every check made up front."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import private_postgres

from cli import main, service_away
from ops.pgcluster import PrivatePostgres

pytestmark = pytest.mark.integration


@pytest.fixture
def pg() -> Iterator[PrivatePostgres]:
    with private_postgres() as cluster:
        yield cluster


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
