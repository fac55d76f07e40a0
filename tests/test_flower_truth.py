"""What Flower shows is what Switchyard decided, and a stopped task can be retried, cancelled and resumed.

Real `celery worker` processes and a real Flower (persistent, in the test's data directory) on Redis and
PostgreSQL, the simulator over HTTP, real git; the CLI as a subprocess and the HTTP API through its ASGI app.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import REPO, Processes, free_port
from fastapi.testclient import TestClient
from pipeline_kit import detail, git, make_context
from sqlalchemy import select
from test_lease_recovery import start_worker, wait_for

from simulator.server import BackgroundSimulator
from store.db import session_scope
from store.models import TERMINAL_STATUSES, Spend, Task
from tasks.context import Context
from tasks.submit import submit
from web.app import create_app
from workers.services import child_env, flower_args

pytestmark = pytest.mark.integration
SWITCHYARD = str(Path(sys.executable).parent / "switchyard")
SLOW = 180.0  # generous: the machine may be loaded (load 15), and Flower learns of a task from its events


@pytest.fixture
def ctx(tmp_path: Path, server: BackgroundSimulator, redis_url: str, postgres_url: str) -> Context:
    limits = {"lease_renew_every_s = 15.0": "lease_renew_every_s = 1.0", "lease_s = 60.0": "lease_s = 10.0"}
    return make_context(tmp_path, server.url, redis_url, postgres_url, **limits)


@pytest.fixture
def sim(server: BackgroundSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        client.post("/_sim/reset").raise_for_status()
        yield client


def fail(sim: httpx.Client, *providers: str) -> None:
    for provider in providers:  # a 400 is not retried: the ladder moves on at once
        sim.post(f"/_sim/providers/{provider}", json={"error_rate": 1.0, "error_status": 400}).raise_for_status()


def heal(sim: httpx.Client, *providers: str) -> None:
    for provider in providers:
        sim.post(f"/_sim/providers/{provider}/heal").raise_for_status()


def calls(sim: httpx.Client, provider: str) -> int:
    count: int = sim.get("/_sim/state").json()["providers"][provider]["calls"]
    return count


def status_of(ctx: Context, task_id: str) -> str:
    with session_scope(ctx.database_url) as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task.status


def finished(ctx: Context, task_id: str) -> str:
    return str(wait_for(f"task {task_id} to end", lambda: status_of(ctx, task_id) in TERMINAL_STATUSES, SLOW) and
               status_of(ctx, task_id))  # fmt: skip


def spend_of(ctx: Context, task_id: str) -> list[tuple[int, str, int]]:
    with session_scope(ctx.database_url) as session:
        rows = session.scalars(select(Spend).where(Spend.task_id == task_id).order_by(Spend.attempt))
        return [(s.attempt, s.state, s.charged_micros) for s in rows]


def start_flower(ctx: Context, processes: Processes, port: int, db: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**child_env(ctx.settings, simulate=True, base_env=os.environ), "FLOWER_UNAUTHENTICATED_API": "true"}
    with log.open("ab") as out:
        proc = processes.spawn(
            [sys.executable, "-m", "celery", *flower_args("127.0.0.1", port, db)],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=out,
        )
    wait_for("Flower to answer", lambda: _answers(f"http://127.0.0.1:{port}/healthcheck"), SLOW)
    return proc


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def flower_task(port: int, task_id: str) -> dict[str, Any] | None:
    answer = httpx.get(f"http://127.0.0.1:{port}/api/task/info/{task_id}", timeout=10)
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    found: dict[str, Any] = answer.json()
    return found


def flower_state(port: int, task_id: str, state: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        info = flower_task(port, task_id)
        return info if info is not None and info.get("state") == state else None

    found: dict[str, Any] = wait_for(f"Flower to show {task_id} {state}", check, SLOW)
    return found


def cli(ctx: Context, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**child_env(ctx.settings, simulate=True, base_env=os.environ), "COLUMNS": "200"}
    return subprocess.run([SWITCHYARD, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def review(ctx: Context, number: int = 1, **extra: Any) -> str:
    request = {"kind": "pr_review", "environment": "dev1", "branch": f"feature/sample-{number}", "deadline_s": 0}
    return submit({**request, **extra}, context=ctx)


def test_flower_shows_failures_arguments_children_and_keeps_them_across_a_restart(
    tmp_path: Path, ctx: Context, processes: Processes, sim: httpx.Client
) -> None:
    port, db = free_port(), ctx.settings.data_dir / "flower.db"
    db.parent.mkdir(parents=True, exist_ok=True)  # made by `switchyard up`
    flower = start_flower(ctx, processes, port, db, tmp_path / "flower.log")
    start_worker(ctx, processes, "pr_review", "review-1", tmp_path / "worker.log")

    good = review(ctx, 1, title="Review the login form")
    assert finished(ctx, good) == "succeeded"
    shown = flower_state(port, good, "SUCCESS")
    assert "'kind': 'pr_review'" in shown["kwargs"] and "'environment': 'dev1'" in shown["kwargs"]
    assert "'stage': 'dev'" in shown["kwargs"] and "Review the login form" in shown["kwargs"]

    fail(sim, "claude", "ollama")
    bad = review(ctx, 2)
    child = review(ctx, 3, parent_id=good)  # a task whose row names a parent hangs under it in Flower
    assert finished(ctx, bad) == "no_provider" and finished(ctx, child) == "no_provider"
    failure = flower_state(port, bad, "FAILURE")
    assert "EndedWithout" in failure["exception"] and "no_provider" in failure["exception"], failure["exception"]
    assert f"no_provider: {detail(ctx, bad)['reason'][:60]}" in failure["exception"]  # the stored reason
    assert "'kind': 'pr_review'" in failure["kwargs"]
    listed = httpx.get(f"http://127.0.0.1:{port}/api/tasks", params={"state": "FAILURE"}, timeout=10).json()
    assert bad in listed and child in listed and good not in listed
    assert flower_state(port, child, "FAILURE")["parent_id"] == good
    assert child in wait_for("Flower to list the child", lambda: flower_task(port, good)["children"], SLOW)  # type: ignore[index]

    # retry the failed review from the CLI once the providers are back: the same id ends SUCCESS in Flower,
    # the failed attempts stay as they were (released, $0), and one new call is made and charged once
    heal(sim, "claude", "ollama")
    claude_before, spend_before = calls(sim, "claude"), spend_of(ctx, bad)
    retried = cli(ctx, "tasks", "retry", bad[:8])
    assert retried.returncode == 0, retried.stderr
    assert "retry: no_provider -> queued" in retried.stdout
    assert finished(ctx, bad) == "succeeded"
    flower_state(port, bad, "SUCCESS")
    assert calls(sim, "claude") == claude_before + 1
    spend_after = spend_of(ctx, bad)
    assert spend_after[: len(spend_before)] == spend_before and all(s == "released" for _, s, _ in spend_before)
    assert [(n, s) for n, s, _ in spend_after[len(spend_before) :]] == [(len(spend_before) + 1, "settled")]
    done = detail(ctx, bad)
    assert done["cost_usd"] * 1_000_000 == pytest.approx(sum(c for _, _, c in spend_after))
    assert [a["action"] for a in done["actions"]] == ["retry"] and done["actions"][0]["from_status"] == "no_provider"
    shown_text = cli(ctx, "tasks", "show", bad)
    assert shown_text.returncode == 0 and "Actions" in shown_text.stdout and "no_provider" in shown_text.stdout

    # Flower keeps its history across a restart (its persistent mode, in the data directory)
    flower.terminate()
    flower.wait(timeout=60)
    assert db.exists() or any(db.parent.glob("flower.db*"))
    start_flower(ctx, processes, port, db, tmp_path / "flower.log")
    assert flower_state(port, good, "SUCCESS")["kwargs"] == shown["kwargs"]
    assert flower_state(port, child, "FAILURE")["exception"]
    assert flower_state(port, bad, "SUCCESS")


def test_a_stopped_pipeline_is_resumed_over_http_and_tasks_are_cancelled(
    tmp_path: Path, ctx: Context, processes: Processes, sim: httpx.Client
) -> None:
    for group in ("pr_impl", "pr_review", "pr_integ"):
        start_worker(ctx, processes, group, f"{group}-1", tmp_path / f"{group}.log")
    api = TestClient(create_app(ctx))

    # the review of an implementation ends no_provider: the pipeline stops there
    fail(sim, "claude", "ollama")
    impl = submit(
        {"kind": "pr_impl", "environment": "dev1", "title": "Add a farewell", "description": "Say goodbye."},
        context=ctx,
    )
    assert finished(ctx, impl) == "succeeded"
    review_id = wait_for("the review", lambda: [c["id"] for c in detail(ctx, impl)["children"]], SLOW)[0]
    assert finished(ctx, review_id) == "no_provider"
    refused = api.post(f"/api/tasks/{impl}/retry")
    assert refused.status_code == 422 and "succeeded" in refused.json()["error"]

    heal(sim, "claude", "ollama")
    resumed = api.post(f"/api/tasks/{impl}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["done"] == [
        {"id": review_id, "action": "retry", "from": "no_provider", "status": "queued", "note": ""}
    ]
    assert finished(ctx, review_id) == "succeeded"
    integ = wait_for("the integration", lambda: [c["id"] for c in detail(ctx, review_id)["children"]], SLOW)[0]
    assert finished(ctx, integ) == "succeeded", detail(ctx, integ)["reason"]
    commit = detail(ctx, impl)["result"]["data"]["commit"]
    git(ctx, "merge-base", "--is-ancestor", commit, "env/dev1")  # the implementation landed on the environment branch
    again = api.post(f"/api/tasks/{impl}/resume")
    assert again.status_code == 422 and "has not stopped" in again.json()["error"]

    # a queued task (no worker of its group runs) is cancelled over HTTP: never run, and it cannot be again
    queued = submit({"kind": "dev_task", "environment": "dev2", "title": "Tidy up"}, context=ctx)
    cancelled = api.post(f"/api/tasks/{queued}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert status_of(ctx, queued) == "cancelled" and spend_of(ctx, queued) == []
    assert api.post(f"/api/tasks/{queued}/cancel").status_code == 422
    assert api.post(f"/api/tasks/{'0' * 8}-0000-0000-0000-000000000000/cancel").status_code == 404

    # a running task is cancelled from the CLI: its open call is answered and charged once, then not acted on
    sim.post("/_sim/providers/claude", json={"latency_ms": 15_000}).raise_for_status()
    claude_before = calls(sim, "claude")
    running = review(ctx, 2)
    open_call = lambda: any(a["status"] == "running" for a in detail(ctx, running)["attempts"])  # noqa: E731
    wait_for("the call to start", open_call, SLOW)  # its attempt's row is written just before the call
    stopped = cli(ctx, "tasks", "cancel", running)
    assert stopped.returncode == 0, stopped.stderr
    assert "cancel: running -> cancelled" in stopped.stdout
    wait_for("the open call to be settled", lambda: [s for _, s, _ in spend_of(ctx, running)] == ["settled"], SLOW)
    assert status_of(ctx, running) == "cancelled" and calls(sim, "claude") == claude_before + 1
    assert detail(ctx, running)["result"] is None  # its answer was not acted on
    worktree = ctx.settings.home.parent / "workspace"
    assert worktree.is_dir()
    code = cli(ctx, "tasks", "cancel", running)
    assert code.returncode == 2 and "only a task that is queued" in code.stderr
