"""The read side on SQLite and PostgreSQL: filters, fields, detail, environment status, exact money."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from store import costs, queries
from store.db import dispose_all, get_engine, session_scope
from store.models import Attempt, Base, Environment, Result, Spend, Stage, Task
from switchyard.fleet import BudgetConfig, Fleet, load_fleet
from switchyard.settings import DEFAULT_FLEET_FILE

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
T0 = NOW - timedelta(minutes=30)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _environments(session: Session) -> None:
    for index, name in enumerate(("dev1", "dev2")):
        session.add(
            Environment(name=name, path=f"/ws/{name}", branch=f"env/{name}", port=8081 + index, repository="/r")
        )
        for position, stage in enumerate(("dev", "qa", "staging")):
            branch = f"env/{name}" if stage == "dev" else f"env/{name}-{stage}"
            session.add(Stage(environment=name, name=stage, position=position, branch=branch))
    session.flush()


TASKS: list[dict[str, Any]] = [
    dict(
        id="t1",
        kind="plan",
        group="high_level",
        environment="dev1",
        stage="dev",
        status="succeeded",
        provider="claude",
        model="claude-sonnet-4-5",
        transport="api",
        cost_micros=1_234_567,
        attempts=1,
        created_at=at(0),
        finished_at=at(1),
    ),
    dict(
        id="t2",
        kind="dev_task",
        group="dev_workers",
        environment="dev1",
        stage="dev",
        status="failed",
        parent_id="t1",
        provider="codex",
        model="gpt-5.3-codex",
        transport="cli",
        cost_micros=333_333,
        attempts=2,
        reason="no_provider: every rung failed",
        created_at=at(1),
        finished_at=at(2),
    ),
    dict(
        id="t3",
        kind="pr_review",
        group="pr_review",
        environment="dev1",
        stage="qa",
        status="running",
        created_at=at(2),
    ),
    dict(
        id="t4",
        kind="pr_impl",
        group="pr_impl",
        environment="dev2",
        stage="dev",
        status="queued",
        created_at=at(3),
    ),
    dict(
        id="t5",
        kind="dev_task",
        group="dev_workers",
        environment="dev2",
        stage="dev",
        status="succeeded",
        parent_id="t1",
        provider="codex",
        model="gpt-5.3-codex",
        transport="api",
        cost_micros=111_111,
        attempts=1,
        created_at=at(4),
        finished_at=at(5),
    ),
]

ATTEMPTS: list[dict[str, Any]] = [
    dict(
        task_id="t1",
        attempt=1,
        provider="claude",
        model="claude-sonnet-4-5",
        transport="api",
        status="succeeded",
        input_tokens=1000,
        cached_input_tokens=200,
        cache_write_tokens=50,
        cache_write_1h_tokens=30,
        output_tokens=500,
        reasoning_tokens=0,
        compute_seconds=2.5,
        cost_micros=1_234_567,
        price_version="claude/claude-sonnet-4-5@2025-09-29",
        latency_ms=812.0,
        started_at=at(0),
    ),
    dict(
        task_id="t2",
        attempt=1,
        provider="ollama",
        model="qwen2.5-coder:7b",
        transport="api",
        status="failed",
        input_tokens=0,
        output_tokens=0,
        error_class="TransientError",
        error="connection refused",
        started_at=at(1),
    ),
    dict(
        task_id="t2",
        attempt=2,
        provider="codex",
        model="gpt-5.3-codex",
        transport="cli",
        status="failed",
        input_tokens=400,
        output_tokens=100,
        reasoning_tokens=30,
        compute_seconds=1.25,
        cost_micros=333_333,
        error_class="BadAnswer",
        error="empty diff",
        started_at=at(1.5),
    ),
    dict(
        task_id="t5",
        attempt=1,
        provider="codex",
        model="gpt-5.3-codex",
        transport="api",
        status="succeeded",
        input_tokens=300,
        cached_input_tokens=100,
        output_tokens=70,
        cost_micros=111_111,
        started_at=NOW - timedelta(days=3),
    ),
]

SPEND: list[dict[str, Any]] = [
    dict(
        task_id="t1",
        attempt=1,
        provider="claude",
        model="claude-sonnet-4-5",
        group="high_level",
        environment="dev1",
        stage="dev",
        state="settled",
        held_micros=0,
        charged_micros=1_234_567,
        created_at=at(0),
    ),
    dict(
        task_id="t2",
        attempt=2,
        provider="codex",
        model="gpt-5.3-codex",
        group="dev_workers",
        environment="dev1",
        stage="dev",
        state="settled",
        held_micros=0,
        charged_micros=333_333,
        created_at=at(1.5),
    ),
    dict(
        task_id="t3",
        attempt=1,
        provider="claude",
        model="claude-sonnet-4-5",
        group="pr_review",
        environment="dev1",
        stage="qa",
        state="held",
        held_micros=500_000,
        charged_micros=0,
        created_at=at(2),
    ),
    dict(
        task_id="t5",
        attempt=1,
        provider="codex",
        model="gpt-5.3-codex",
        group="dev_workers",
        environment="dev2",
        stage="dev",
        state="settled",
        held_micros=0,
        charged_micros=111_111,
        created_at=NOW - timedelta(days=3),
    ),
]

RESULTS: list[dict[str, Any]] = [
    dict(
        environment="dev1",
        stage="dev",
        task_id="t1",
        kind="plan",
        status="succeeded",
        summary="planned 2 sub-tasks",
        data={"children": ["t2", "t5"]},
        updated_at=at(1),
    ),
    dict(
        environment="dev1",
        stage="dev",
        task_id="t2",
        kind="dev_task",
        status="failed",
        summary="no usable diff",
        data={},
        updated_at=at(2),
    ),
    dict(
        environment="dev2",
        stage="dev",
        task_id="t5",
        kind="dev_task",
        status="succeeded",
        summary="committed abc123",
        data={"commit": "abc123"},
        updated_at=at(5),
    ),
]


def seed(session: Session) -> None:
    """Two initialized environments, five tasks in four statuses, attempts with tokens, spend and results."""
    _environments(session)
    for values in TASKS:
        session.add(Task(title=f"task {values['id']}", payload={"n": values["id"]}, **values))
        session.flush()  # parents before children
    for attempt in ATTEMPTS:
        session.add(Attempt(**attempt))
    for spend in SPEND:
        session.add(Spend(**spend))
    for result in RESULTS:
        session.add(Result(**result))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    url: str = request.getfixturevalue(f"{request.param}_url")
    Base.metadata.create_all(get_engine(url))
    with session_scope(url) as session:
        seed(session)
    yield url
    dispose_all()


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    with session_scope(db_url) as session:
        yield session


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return load_fleet(DEFAULT_FLEET_FILE)


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [row["id"] for row in rows]


def test_list_tasks_is_newest_first_with_display_fields(session: Session) -> None:
    rows = queries.list_tasks(session)
    assert ids(rows) == ["t5", "t4", "t3", "t2", "t1"]
    t2 = rows[3]
    assert {k: t2[k] for k in ("kind", "group", "status", "provider", "transport")} == {
        "kind": "dev_task",
        "group": "dev_workers",
        "status": "failed",
        "provider": "codex",
        "transport": "cli",
    }
    assert t2["cost_usd"] == 0.333333 and t2["attempts"] == 2 and t2["parent_id"] == "t1"
    assert t2["reason"] == "no_provider: every rung failed"
    assert datetime.fromisoformat(t2["created_at"]) == at(1)
    assert datetime.fromisoformat(t2["finished_at"]) == at(2)
    assert rows[0]["model"] == "gpt-5.3-codex" and rows[1]["finished_at"] is None


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"environment": "dev1"}, ["t3", "t2", "t1"]),
        ({"environment": "dev1", "stage": "qa"}, ["t3"]),
        ({"kind": "dev_task"}, ["t5", "t2"]),
        ({"status": "succeeded"}, ["t5", "t1"]),
        ({"group": "dev_workers", "environment": "dev2"}, ["t5"]),
        ({"status": "cancelled"}, []),
        ({"limit": 2}, ["t5", "t4"]),
    ],
)
def test_list_tasks_filters(session: Session, filters: dict[str, Any], expected: list[str]) -> None:
    assert ids(queries.list_tasks(session, **filters)) == expected


def test_task_detail_has_attempts_result_children_and_parent(session: Session) -> None:
    detail = queries.task_detail(session, "t2")
    assert detail is not None
    assert detail["payload"] == {"n": "t2"} and detail["attempt_count"] == 2
    first, second = detail["attempts"]
    assert (first["provider"], first["error_class"], first["cost_usd"]) == ("ollama", "TransientError", 0.0)
    assert second["attempt"] == 2 and second["reasoning_tokens"] == 30 and second["cost_micros"] == 333_333
    assert second["error"] == "empty diff" and second["transport"] == "cli"
    assert detail["result"]["summary"] == "no usable diff" and detail["result"]["status"] == "failed"
    assert detail["parent"] == {"id": "t1", "kind": "plan", "status": "succeeded", "title": "task t1"}
    assert detail["children"] == []

    parent = queries.task_detail(session, "t1")
    assert parent is not None
    assert [(c["id"], c["kind"], c["status"]) for c in parent["children"]] == [
        ("t2", "dev_task", "failed"),
        ("t5", "dev_task", "succeeded"),
    ]
    attempt = parent["attempts"][0]
    assert attempt["price_version"] == "claude/claude-sonnet-4-5@2025-09-29" and attempt["latency_ms"] == 812.0
    assert (attempt["input_tokens"], attempt["cached_input_tokens"], attempt["output_tokens"]) == (
        1000,
        200,
        500,
    )
    assert parent["result"]["data"] == {"children": ["t2", "t5"]} and parent["parent"] is None


def test_task_detail_of_unknown_task_is_none(session: Session) -> None:
    assert queries.task_detail(session, "nope") is None


def test_environment_status_counts_and_last_results(session: Session, fleet: Fleet) -> None:
    envs = {env["name"]: env for env in queries.environment_status(session, fleet)}
    assert list(envs) == ["dev1", "dev2", "dev3", "dev4", "dev5"]
    dev1 = envs["dev1"]
    assert (dev1["initialized"], dev1["path"], dev1["branch"], dev1["port"]) == (
        True,
        "/ws/dev1",
        "env/dev1",
        8081,
    )
    assert dev1["counts"] == {"succeeded": 1, "failed": 1, "running": 1}
    stages = {stage["name"]: stage for stage in dev1["stages"]}
    assert list(stages) == ["dev", "qa", "staging"]
    assert stages["dev"]["counts"] == {"succeeded": 1, "failed": 1}
    assert stages["dev"]["last_result"]["task_id"] == "t2"
    assert stages["qa"]["counts"] == {"running": 1} and stages["qa"]["last_result"] is None
    assert stages["staging"]["branch"] == "env/dev1-staging" and stages["staging"]["counts"] == {}
    assert envs["dev2"]["stages"][0]["last_result"]["summary"] == "committed abc123"
    dev4 = envs["dev4"]
    assert (dev4["initialized"], dev4["path"], dev4["port"], dev4["counts"]) == (False, None, 8084, {})
    assert [s["branch"] for s in dev4["stages"]] == ["env/dev4", "env/dev4-qa", "env/dev4-staging"]


def test_status_group_and_attempt_counts(session: Session) -> None:
    assert queries.status_counts(session) == {"succeeded": 2, "failed": 1, "running": 1, "queued": 1}
    assert queries.group_counts(session) == {
        "high_level": {"succeeded": 1},
        "dev_workers": {"failed": 1, "succeeded": 1},
        "pr_review": {"running": 1},
        "pr_impl": {"queued": 1},
    }
    attempts = {(r["provider"], r["status"], r["error_class"]): r["count"] for r in queries.attempt_counts(session)}
    assert attempts == {
        ("claude", "succeeded", None): 1,
        ("ollama", "failed", "TransientError"): 1,
        ("codex", "failed", "BadAnswer"): 1,
        ("codex", "succeeded", None): 1,
    }


def by(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {row[key]: row for row in rows}


def test_costs_are_exact_sums(session: Session) -> None:
    report = costs.costs(session)
    providers = by(report["providers"], "provider")
    assert sorted(providers) == ["claude", "codex", "ollama"]
    claude, codex, ollama = providers["claude"], providers["codex"], providers["ollama"]
    assert (claude["calls"], claude["cost_micros"], claude["held_micros"]) == (1, 1_234_567, 500_000)
    assert (claude["input_tokens"], claude["cached_input_tokens"], claude["cache_write_tokens"]) == (
        1000,
        200,
        50,
    )
    assert claude["cache_write_1h_tokens"] == 30 and providers["codex"]["cache_write_1h_tokens"] == 0
    assert claude["compute_seconds"] == 2.5 and claude["cost_usd"] == 1.234567
    assert (codex["calls"], codex["cost_micros"], codex["input_tokens"], codex["output_tokens"]) == (
        2,
        444_444,
        700,
        170,
    )
    assert (ollama["calls"], ollama["cost_micros"], ollama["charges"]) == (1, 0, 0)
    total = report["total"]
    assert (total["cost_micros"], total["held_micros"], total["calls"]) == (1_679_011, 500_000, 4)
    assert total["cost_usd"] == 1.679011 and total["output_tokens"] == 670
    groups = by(report["groups"], "group")
    assert {name: row["cost_micros"] for name, row in groups.items()} == {
        "high_level": 1_234_567,
        "dev_workers": 444_444,
        "pr_review": 0,
    }
    assert groups["pr_review"]["held_micros"] == 500_000
    envs = by(report["environments"], "environment")
    assert {name: row["cost_micros"] for name, row in envs.items()} == {"dev1": 1_567_900, "dev2": 111_111}


def test_costs_since_leaves_older_rows_out(session: Session) -> None:
    report = costs.costs(session, since=NOW - timedelta(days=1))
    assert report["total"]["cost_micros"] == 1_567_900 and report["total"]["calls"] == 3
    assert by(report["providers"], "provider")["codex"]["calls"] == 1
    assert [row["environment"] for row in report["environments"]] == ["dev1"]
    assert report["since"] == (NOW - timedelta(days=1)).isoformat()


def test_budget_status_per_window_and_target(session: Session, fleet: Fleet) -> None:
    rows = costs.budget_status(session, fleet, now=NOW)
    day, hour = rows
    assert (day["window"], day["target"], day["cap_usd"]) == ("day", "*", 50.0)
    assert day["spent_usd"] == 1.5679 and day["held_usd"] == 0.5 and day["remaining_usd"] == 47.9321
    assert day["since"] == "2026-03-10T00:00:00+00:00" and not day["alerting"] and not day["exhausted"]
    assert hour["since"] == "2026-03-10T12:00:00+00:00" and hour["spent_usd"] == 1.5679

    scoped = fleet.model_copy(
        update={
            "budgets": [
                BudgetConfig(scope="provider", target="*", window="month", cap_usd=1.5),
                BudgetConfig(scope="group", target="dev_workers", window="day", cap_usd=0.5, alert_usd=0.3),
                BudgetConfig(scope="environment", target="dev5", window="hour", cap_usd=1.0),
            ]
        }
    )
    rows = costs.budget_status(session, scoped, now=NOW)
    per_provider = {row["target"]: row for row in rows if row["scope"] == "provider"}
    assert per_provider["claude"]["exhausted"] and per_provider["claude"]["remaining_usd"] == 0.0
    assert per_provider["codex"]["spent_usd"] == 0.444444 and not per_provider["codex"]["exhausted"]
    group = next(row for row in rows if row["scope"] == "group")
    assert (group["target"], group["spent_usd"], group["alerting"], group["exhausted"]) == (
        "dev_workers",
        0.333333,
        True,
        False,
    )
    idle = next(row for row in rows if row["scope"] == "environment")
    assert (idle["target"], idle["spent_usd"], idle["remaining_usd"]) == ("dev5", 0.0, 1.0)
