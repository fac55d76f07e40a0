"""The status API, metrics and dashboard through FastAPI's TestClient on a seeded SQLite database."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from test_queries import seed  # the same rows the query tests check, so the numbers below are the same

from store.db import dispose_all, get_engine, session_scope
from store.models import Base, Environment
from switchyard.settings import Settings
from tasks.context import Context, build_context
from web.app import create_app

SECRETS = ("sk-ant-test-SECRET123", "sk-openai-test-SECRET456", "brokerpw")


def make_context(tmp_path: Path, database_url: str, broker_url: str) -> Context:
    settings = Settings(
        anthropic_api_key="sk-ant-test-SECRET123",
        openai_api_key="sk-openai-test-SECRET456",
        database_url=database_url,
        broker_url=broker_url,
        home=tmp_path / "home",
    )
    return build_context(settings)


@pytest.fixture
def dead_broker() -> str:
    """A broker URL with a password, on a port where nothing listens."""
    with socket.socket() as sock:  # bound and closed: nothing listens there while the test runs
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://:brokerpw@127.0.0.1:{port}/0"


@pytest.fixture
def client(tmp_path: Path, sqlite_url: str, dead_broker: str) -> Iterator[TestClient]:
    Base.metadata.create_all(get_engine(sqlite_url))
    with session_scope(sqlite_url) as session:
        seed(session)
    with TestClient(create_app(make_context(tmp_path, sqlite_url, dead_broker))) as test_client:
        yield test_client
    dispose_all()


def get(client: TestClient, path: str, status: int = 200) -> Any:
    response = client.get(path)
    assert response.status_code == status, response.text
    return response.json()


def test_status_summarises_environments_groups_and_tasks(client: TestClient) -> None:
    body = get(client, "/api/multi-env/status")
    assert body["profile"] == "development"
    assert body["tasks"] == {
        "total": 5,
        "by_status": {"succeeded": 2, "failed": 1, "running": 1, "queued": 1},
    }
    envs = {env["name"]: env for env in body["environments"]}
    assert envs["dev1"]["counts"] == {"succeeded": 1, "failed": 1, "running": 1}
    assert envs["dev3"]["initialized"] is False
    assert [group["name"] for group in body["groups"]] == [
        "high_level",
        "dev_workers",
        "pr_review",
        "pr_impl",
        "pr_integ",
    ]


def test_directories_list_paths_branches_and_ports(client: TestClient) -> None:
    body = get(client, "/api/multi-env/directories")
    dev1, dev2, dev3 = body["environments"][:3]
    assert (dev1["path"], dev1["branch"], dev1["port"]) == ("/ws/dev1", "env/dev1", 8081)
    assert dev1["stages"][1] == {"name": "qa", "branch": "env/dev1-qa"}
    assert (dev3["initialized"], dev3["path"], dev3["port"]) == (False, None, 8083)
    assert body["workspace"].endswith("workspace") and dev2["port"] == 8082


def test_environments_have_stage_counts_and_last_result(client: TestClient) -> None:
    envs = get(client, "/api/multi-env/environments")["environments"]
    dev1_dev = envs[0]["stages"][0]
    assert dev1_dev["counts"] == {"succeeded": 1, "failed": 1}
    assert dev1_dev["last_result"]["task_id"] == "t2" and dev1_dev["last_result"]["summary"] == "no usable diff"


def test_pr_groups_come_from_the_fleet_with_counts(client: TestClient) -> None:
    groups = {group["name"]: group for group in get(client, "/api/multi-env/pr-groups")["groups"]}
    assert len(groups) == 5
    workers = groups["dev_workers"]
    assert (workers["queue"], workers["sessions"], workers["kinds"]) == ("dev_workers", 5, ["dev_task"])
    assert workers["ladder"] == ["ollama", "codex"] and workers["counts"] == {"failed": 1, "succeeded": 1}
    assert workers["models"] == {"ollama": "qwen2.5-coder:7b", "codex": "gpt-5.3-codex"}
    assert groups["pr_review"]["active"] == 1 and groups["pr_integ"]["counts"] == {}


def test_health_is_degraded_not_broken_when_the_broker_is_down(client: TestClient, dead_broker: str) -> None:
    body = get(client, "/api/multi-env/health")
    assert body["ok"] is False
    database, broker = body["checks"]["database"], body["checks"]["broker"]
    assert database["ok"] is True and database["schema"] is True
    assert broker["ok"] is False and broker["error"].startswith("ConnectionError")
    assert broker["target"] == dead_broker.replace("brokerpw", "***")


def test_health_is_ok_with_a_live_broker(tmp_path: Path, sqlite_url: str, redis_url: str) -> None:
    Base.metadata.create_all(get_engine(sqlite_url))
    with TestClient(create_app(make_context(tmp_path, sqlite_url, redis_url))) as client:
        body = get(client, "/api/multi-env/health")
    assert body["ok"] is True and body["checks"]["broker"]["ok"] is True


def test_a_database_without_tables_answers_503_and_health_says_why(
    tmp_path: Path, sqlite_url: str, dead_broker: str
) -> None:
    with TestClient(create_app(make_context(tmp_path, sqlite_url, dead_broker))) as client:
        error = get(client, "/api/tasks", 503)["error"]
        database = get(client, "/api/multi-env/health")["checks"]["database"]
    assert "OperationalError" in error and "/api/multi-env/health" in error
    assert database["ok"] is False and "switchyard db upgrade" in database["error"]


def test_list_tasks_filters_and_limits(client: TestClient) -> None:
    body = get(client, "/api/tasks?environment=dev1&status=succeeded")
    assert body["count"] == 1 and body["tasks"][0]["id"] == "t1"
    assert [t["id"] for t in get(client, "/api/tasks?kind=dev_task")["tasks"]] == ["t5", "t2"]
    assert [t["id"] for t in get(client, "/api/tasks?limit=2")["tasks"]] == ["t5", "t4"]
    assert get(client, "/api/tasks")["tasks"][0]["cost_usd"] == 0.111111


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("limit=0", "limit: Input should be greater than or equal to 1"),
        ("colour=red", "colour: Extra inputs"),
    ],
)
def test_bad_task_queries_are_422_with_a_message(client: TestClient, query: str, fragment: str) -> None:
    error = get(client, f"/api/tasks?{query}", 422)["error"]
    assert error.startswith("invalid request: ") and fragment in error


def test_task_detail_and_404(client: TestClient) -> None:
    detail = get(client, "/api/tasks/t1")
    assert [child["id"] for child in detail["children"]] == ["t2", "t5"]
    assert detail["attempts"][0]["provider"] == "claude" and detail["result"]["status"] == "succeeded"
    assert get(client, "/api/tasks/missing", 404) == {
        "error": "no task with id 'missing'; list tasks with GET /api/tasks"
    }


def test_costs_and_budgets(client: TestClient) -> None:
    costs = get(client, "/api/costs")
    assert costs["total"]["cost_micros"] == 1_679_011 and costs["total"]["held_micros"] == 500_000
    assert {row["provider"] for row in costs["providers"]} == {"claude", "codex", "ollama"}
    claude = next(row for row in costs["providers"] if row["provider"] == "claude")
    assert (claude["cache_write_tokens"], claude["cache_write_1h_tokens"]) == (50, 30)  # 5-minute and 1-hour
    assert get(client, "/api/costs?since=2999-01-01T00:00:00Z")["total"]["cost_micros"] == 0
    budgets = get(client, "/api/budgets")["budgets"]
    assert [(b["scope"], b["window"], b["cap_usd"]) for b in budgets] == [
        ("all", "day", 50.0),
        ("all", "hour", 10.0),
    ]
    assert all({"spent_usd", "held_usd", "remaining_usd", "alerting", "exhausted", "since"} <= set(b) for b in budgets)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_parse_and_hold_the_store_numbers(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert found[("switchyard_tasks", (("group", "dev_workers"), ("status", "failed")))] == 1
    assert found[("switchyard_cost_usd_total", (("provider", "claude"),))] == 1.234567
    assert found[("switchyard_tokens_total", (("class", "output"), ("provider", "codex")))] == 170
    key = (
        "switchyard_attempts_total",
        (("error_class", "BadAnswer"), ("provider", "codex"), ("status", "failed")),
    )
    assert found[key] == 1
    assert (
        found[
            (
                "switchyard_attempts_total",
                (("error_class", "none"), ("provider", "claude"), ("status", "succeeded")),
            )
        ]
        == 1
    )


def test_dashboard_and_docs_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>Switchyard</title>" in page.text and "/static/dashboard.js" in page.text
    assert "http" not in page.text.replace('href="/', "")  # no CDN: every asset is served from here
    script = client.get("/static/dashboard.js")
    assert script.status_code == 200 and "/api/multi-env/status" in script.text
    assert client.get("/docs").status_code == 200
    paths = get(client, "/openapi.json")["paths"]
    assert {"/api/multi-env/health", "/api/tasks", "/api/tasks/{task_id}", "/api/costs", "/metrics"} <= set(paths)


def test_no_secret_appears_in_any_response(client: TestClient) -> None:
    paths = [route for route in get(client, "/openapi.json")["paths"] if "{" not in route] + [
        "/",
        "/docs",
        "/openapi.json",
        "/static/dashboard.js",
        "/api/tasks/t1",
        "/api/tasks/missing",
        "/api/tasks?limit=0",
    ]
    for path in paths:
        body = client.get(path).text
        for secret in SECRETS:
            assert secret not in body, f"{secret} leaked in {path}"
    posted = client.post("/api/tasks", content=b"{not json", headers={"content-type": "application/json"})
    assert posted.status_code == 422 and not any(secret in posted.text for secret in SECRETS)


def test_submit_refuses_bad_input_with_422(client: TestClient) -> None:
    pytest.importorskip("tasks.submit")
    response = client.post("/api/tasks", json={"kind": "launch", "environment": "dev1"})
    assert response.status_code == 422 and "kind" in response.json()["error"]
    response = client.post("/api/tasks", json={"kind": "pr_review", "environment": "dev9", "branch": "b"})
    assert response.status_code == 422 and "unknown environment 'dev9'" in response.json()["error"]


def test_submit_queues_a_task(tmp_path: Path, sqlite_url: str, redis_url: str) -> None:
    pytest.importorskip("tasks.submit")
    migrate = pytest.importorskip("store.migrate")
    migrate.ensure_schema(sqlite_url)
    with session_scope(sqlite_url) as session:
        session.add(Environment(name="dev1", path="/ws/dev1", branch="env/dev1", port=8081, repository="/r"))
    with TestClient(create_app(make_context(tmp_path, sqlite_url, redis_url))) as client:
        review = client.post("/api/tasks", json={"kind": "pr_review", "environment": "dev1", "branch": "feat/x"})
        assert review.status_code == 422 and "the repository of dev1 is missing" in review.json()["error"]
        response = client.post("/api/tasks", json={"kind": "dev_task", "environment": "dev1", "title": "notes"})
        assert response.status_code == 202, response.text
        detail = get(client, f"/api/tasks/{response.json()['id']}")
    assert (detail["kind"], detail["group"], detail["status"]) == ("dev_task", "dev_workers", "queued")
