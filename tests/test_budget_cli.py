"""`switchyard budget list|set`, run through the installed script as an operator runs it: overrides are stored
in SQL and the next hold of a running ledger obeys them; bad input is one clear line with exit code 2; the
status API answers the same rows as `budget list --json`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, free_port
from fastapi.testclient import TestClient

from routing.ledger import Ledger
from store import repo
from store.db import dispose_all, session_scope
from switchyard.errors import BudgetRefused
from switchyard.fleet import load_fleet
from switchyard.settings import Settings
from tasks.context import build_context
from web.app import create_app

SWITCHYARD = str(Path(sys.executable).parent / "switchyard")
SECRET_KEYS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OLLAMA_HOST")
PLACE = {"provider": "claude", "model": "claude-sonnet-5", "group": "pr_review", "environment": "dev1", "stage": "dev"}


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_") and k not in SECRET_KEYS}
    base.update(
        SWITCHYARD_HOME=str(tmp_path / "home"),
        SWITCHYARD_BROKER_PORT=str(free_port()),
        SWITCHYARD_DATABASE_URL=sqlite_url,
        COLUMNS="200",
    )
    return base


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SWITCHYARD, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def refused(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(row["scope"], row["target"], row["window"]): row for row in rows}


def test_list_shows_the_fleet_files_budgets(env: dict[str, str]) -> None:
    listed = by_key(as_json(cli(env, "budget", "list", "--json"))["budgets"])
    assert set(listed) == {("all", "*", "day"), ("all", "*", "hour")}
    day = listed[("all", "*", "day")]
    assert (day["cap_usd"], day["alert_usd"], day["action"], day["source"]) == (50.0, 40.0, "block", "file")
    assert (day["used_usd"], day["remaining_usd"], day["exhausted"]) == (0.0, 50.0, False)
    table = cli(env, "budget", "list")
    assert table.returncode == 0 and "$50.0000" in table.stdout and "file" in table.stdout


def test_set_takes_effect_on_the_next_hold_without_a_restart(env: dict[str, str], sqlite_url: str) -> None:
    assert cli(env, "db", "upgrade").returncode == 0
    ledger = Ledger(sqlite_url, load_fleet(REPO / "switchyard.toml"))  # a worker's ledger, running throughout
    with session_scope(sqlite_url) as session:
        for task_id in ("a", "b", "c"):
            repo.create_task(
                session, task_id=task_id, kind="pr_review", group="pr_review", environment="dev1", stage="dev",
                title="", payload={},
            )  # fmt: skip
    ledger.hold(task_id="a", attempt=1, micros=40_000, **PLACE)

    done = as_json(cli(env, "budget", "set", "--scope", "all", "--window", "day", "--cap", "0.05", "--json"))
    assert done["set"] == {
        "scope": "all",
        "target": "*",
        "window": "day",
        "cap_usd": 0.05,
        "alert_usd": None,  # the file's $40 alert is above the new cap
        "action": "block",
        "source": "override",
    }
    assert done["note"] == (
        "the alert line $40 is above the new cap $0.05, so this budget has none now; "
        "set one at or under the cap with --alert"
    )
    (row,) = done["budgets"]
    assert (row["used_usd"], row["remaining_usd"]) == (0.04, 0.01)
    with pytest.raises(BudgetRefused, match="all/day"):
        ledger.hold(task_id="b", attempt=1, micros=20_000, **PLACE)

    assert (
        cli(env, "budget", "set", "--scope", "all", "--window", "day", "--cap", "0.1", "--alert", "0.05").returncode
        == 0
    )
    ledger.hold(task_id="b", attempt=1, micros=20_000, **PLACE)
    added = cli(env, "budget", "set", "--scope", "provider", "--target", "claude", "--window", "hour", "--cap", "0.07",
                "--action", "degrade", "--json")  # fmt: skip
    assert as_json(added)["budgets"][0]["used_usd"] == 0.06  # the spend before the budget existed counts
    with pytest.raises(BudgetRefused, match="provider=claude/hour"):
        ledger.hold(task_id="c", attempt=1, micros=20_000, **PLACE)

    listed = by_key(as_json(cli(env, "budget", "list", "--json"))["budgets"])
    assert (listed[("all", "*", "day")]["source"], listed[("all", "*", "day")]["alert_usd"]) == ("override", 0.05)
    assert listed[("all", "*", "day")]["alerting"] is True
    claude = listed[("provider", "claude", "hour")]
    assert (claude["cap_usd"], claude["action"], claude["used_usd"]) == (0.07, "degrade", 0.06)
    assert listed[("all", "*", "hour")]["source"] == "file"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--scope", "team", "--window", "day", "--cap", "1"), "unknown scope 'team'; use one of: all, environment"),
        (("--scope", "all", "--window", "week", "--cap", "1"), "unknown window 'week'; use one of: hour, day, month"),
        (("--scope", "all", "--window", "day", "--cap", "-1"), "--cap must be a number of US dollars, zero or more"),
        (("--scope", "all", "--window", "day", "--cap", "1", "--alert", "2"), "--alert 2.0 is above --cap 1.0"),
        (("--scope", "environment", "--target", "dev9", "--window", "day", "--cap", "1"), "unknown environment 'dev9'"),
        (("--scope", "group", "--target", "nope", "--window", "day", "--cap", "1"), "unknown group 'nope'"),
        (("--scope", "provider", "--target", "gemini", "--window", "day", "--cap", "1"), "unknown provider 'gemini'"),
        (("--scope", "all", "--window", "day", "--cap", "1", "--action", "warn"), "unknown action 'warn'"),
        (("--scope", "all", "--target", "dev1", "--window", "day", "--cap", "1"), "scope 'all' takes no --target"),
    ],
)
def test_bad_budgets_are_refused_with_the_reason(env: dict[str, str], args: tuple[str, ...], message: str) -> None:
    refused(cli(env, "budget", "set", *args), message)


def test_bad_budgets_change_nothing(env: dict[str, str]) -> None:
    refused(cli(env, "budget", "set", "--scope", "all", "--window", "day", "--cap", "abc"), "Invalid value for '--cap'")
    refused(cli(env, "budget", "set", "--scope", "all", "--window", "day", "--cap", "1", "--alert", "5"), "above")
    listed = as_json(cli(env, "budget", "list", "--json"))["budgets"]
    assert {row["source"] for row in listed} == {"file"}


def test_the_api_answers_what_budget_list_prints(env: dict[str, str], sqlite_url: str, tmp_path: Path) -> None:
    assert (
        cli(env, "budget", "set", "--scope", "stage", "--target", "qa", "--window", "month", "--cap", "3").returncode
        == 0
    )
    listed = as_json(cli(env, "budget", "list", "--json"))
    context = build_context(Settings(home=tmp_path / "home", database_url=sqlite_url))
    try:
        with TestClient(create_app(context)) as client:
            answer = client.get("/api/budgets")
    finally:
        dispose_all()
    assert answer.status_code == 200
    assert answer.json() == listed
    assert ("stage", "qa", "month") in by_key(listed["budgets"])


def test_set_without_alert_keeps_the_alert_line_and_says_so(env: dict[str, str]) -> None:
    assert cli(env, "db", "upgrade").returncode == 0
    kept = cli(env, "budget", "set", "--scope", "all", "--window", "day", "--cap", "45")
    assert kept.returncode == 0, kept.stderr
    assert "alert line kept at $40 (the budget this replaces had it; --alert sets another)" in kept.stdout
    row = by_key(as_json(cli(env, "budget", "list", "--json"))["budgets"])[("all", "*", "day")]
    assert (row["cap_usd"], row["alert_usd"]) == (45.0, 40.0)
    given = as_json(
        cli(env, "budget", "set", "--scope", "all", "--window", "day", "--cap", "45", "--alert", "30", "--json")
    )
    assert given["note"] == "" and given["set"]["alert_usd"] == 30.0
