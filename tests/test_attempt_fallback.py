"""The attempt loop on every provider error a next rung can serve, with the real router, ledger (SQLite), shared
breaker (Redis) and the SDKs against the simulator: 400/413/422 and 404 move to the next rung with the reason
recorded, a 404 marks the model unusable for every worker until a heal or a changed fleet entry, a task ends
only when no rung can serve it (with every reason), a hang counts against the provider, and each try inside
an attempt is recorded and shown by ``tasks show`` (table and --json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pipeline_kit import detail, factory, fleet_file, make_context

from cli.detail import show_detail
from cli.render import console
from simulator.server import BackgroundSimulator
from tasks.attempt import Runner
from tasks.context import Context, build_context
from tasks.submit import submit

CLAUDE_MODEL = "claude-sonnet-5"  # pr_review's first rung: claude (this model), then ollama


@pytest.fixture
def ctx(tmp_path: Path, server: BackgroundSimulator, redis_url: str, sqlite_url: str) -> Context:
    return make_context(tmp_path, server.url, redis_url, sqlite_url)


def runner(ctx: Context) -> Runner:
    return Runner(ctx, make_provider=factory(), sleep=lambda _: None)


def review(ctx: Context, number: int = 1) -> str:
    request = {"kind": "pr_review", "environment": "dev1", "branch": f"feature/sample-{number}", "deadline_s": 0}
    return submit(request, context=ctx)


def fault(sim: httpx.Client, provider: str, **change: object) -> None:
    sim.post(f"/_sim/providers/{provider}", json=change).raise_for_status()


def calls(sim: httpx.Client, provider: str) -> int:
    count: int = sim.get("/_sim/state").json()["providers"][provider]["calls"]
    return count


def another_worker(ctx: Context, **fleet_changes: str) -> Context:
    """A context of its own (its own Redis connection, router and breakers) on the same database and state,
    optionally with a changed fleet file."""
    settings = ctx.settings
    if fleet_changes:
        folder = settings.home.parent / "changed"
        folder.mkdir(exist_ok=True)
        settings = settings.model_copy(update={"fleet_file": fleet_file(folder, **fleet_changes)})
    return build_context(settings)


@pytest.mark.parametrize(
    ("status", "text"),
    [(400, "prompt is too long"), (413, "maximum allowed number of bytes"), (422, "valid list")],
)
def test_a_rejection_on_the_first_rung_falls_back_with_the_reason_recorded(
    ctx: Context, sim: httpx.Client, status: int, text: str
) -> None:
    fault(sim, "claude", error_rate=1.0, error_status=status)
    task_id = review(ctx)
    assert runner(ctx).run(task_id) == "succeeded"
    row = detail(ctx, task_id)
    assert row["provider"] == "ollama"
    first, second = row["attempts"]
    assert (first["provider"], first["status"], first["error_class"]) == ("claude", "failed", "RequestRejected")
    assert f"HTTP {status}" in first["error"] and text in first["error"]
    assert (second["provider"], second["status"]) == ("ollama", "succeeded")
    assert calls(sim, "claude") == 1  # not retried
    assert ctx.breakers().status(["claude"])["claude"].failures == 0  # not the provider's health
    assert ctx.breakers().status(["claude"])["claude"].unusable_models == ()  # only a 404 marks a model


def test_a_404_marks_the_model_for_every_worker_until_it_is_healed(ctx: Context, sim: httpx.Client) -> None:
    fault(sim, "claude", missing_models=[CLAUDE_MODEL])
    first = review(ctx, 1)
    assert runner(ctx).run(first) == "succeeded"
    failed = detail(ctx, first)["attempts"][0]
    assert (failed["error_class"], detail(ctx, first)["provider"]) == ("ModelNotFound", "ollama")
    assert f"model: {CLAUDE_MODEL}" in failed["error"]
    (mark,) = ctx.breakers().status(["claude"])["claude"].unusable_models
    assert (mark.model, "HTTP 404" in mark.reason) == (CLAUDE_MODEL, True)

    other = another_worker(ctx)  # another worker process: it reads the mark from Redis and never asks claude
    second = review(other, 2)
    assert runner(other).run(second) == "succeeded"
    (only,) = detail(other, second)["attempts"]
    assert only["provider"] == "ollama"
    assert f"claude: model {CLAUDE_MODEL} unusable (ModelNotFound" in only["route_note"]
    assert calls(sim, "claude") == 1

    sim.post("/_sim/providers/claude/heal").raise_for_status()  # the model exists again...
    assert other.breakers().heal_models("claude") == 1  # ...and an operator says so
    other.router().forget_state()  # workers see it once their 250 ms snapshot of the breakers is renewed
    third = review(other, 3)
    assert runner(other).run(third) == "succeeded"
    assert detail(other, third)["provider"] == "claude"


def test_a_changed_fleet_entry_for_the_provider_lifts_its_marks(ctx: Context, sim: httpx.Client) -> None:
    fault(sim, "claude", missing_models=[CLAUDE_MODEL])
    assert runner(ctx).run(review(ctx, 1)) == "succeeded"
    assert calls(sim, "claude") == 1
    sim.post("/_sim/providers/claude/heal").raise_for_status()
    unchanged = another_worker(ctx, **{"latency_ms = 60": "latency_ms = 61"})  # a change outside claude's entry
    task_id = review(unchanged, 2)
    assert runner(unchanged).run(task_id) == "succeeded" and detail(unchanged, task_id)["provider"] == "ollama"
    changed = another_worker(ctx, **{"max_in_flight = 8": "max_in_flight = 7"})  # claude's entry changed
    task_id = review(changed, 3)
    assert runner(changed).run(task_id) == "succeeded"
    assert detail(changed, task_id)["provider"] == "claude"
    assert calls(sim, "claude") == 2


def test_when_no_rung_can_serve_the_task_ends_with_every_reason(ctx: Context, sim: httpx.Client) -> None:
    fault(sim, "claude", error_rate=1.0, error_status=413)
    fault(sim, "ollama", missing_models=["qwen2.5-coder:7b"])
    task_id = review(ctx)
    assert runner(ctx).run(task_id) == "no_provider"
    row = detail(ctx, task_id)
    assert "claude: RequestRejected: claude: HTTP 413" in row["reason"]
    assert 'ollama: ModelNotFound: ollama: HTTP 404: model "qwen2.5-coder:7b" not found' in row["reason"]
    assert [(a["provider"], a["error_class"]) for a in row["attempts"]] == [
        ("claude", "RequestRejected"),
        ("ollama", "ModelNotFound"),
    ]


def test_a_hang_counts_against_the_provider_and_the_next_rung_serves(
    tmp_path: Path, server: BackgroundSimulator, redis_url: str, sqlite_url: str, sim: httpx.Client
) -> None:
    ctx = make_context(
        tmp_path, server.url, redis_url, sqlite_url, **{"provider_timeout_s = 120.0": "provider_timeout_s = 0.4"}
    )
    fault(sim, "claude", error_rate=1.0, error_status="timeout", hang_ms=10_000)
    task_id = review(ctx)
    assert runner(ctx).run(task_id) == "succeeded"
    first, second = detail(ctx, task_id)["attempts"]
    assert (first["error_class"], second["provider"]) == ("TransientError", "ollama")
    assert "timed out after 0.4s" in first["error"]
    assert [(t["status"], t["error_class"]) for t in first["tries"]] == [("failed", "TransientError")] * 3
    assert all(t["duration_ms"] >= 400 for t in first["tries"])
    status = ctx.breakers().status(["claude"])["claude"]
    assert status.failures == 3 and "timed out" in (status.last_failure or "")


def test_each_try_is_recorded_and_shown_by_tasks_show(ctx: Context, sim: httpx.Client) -> None:
    fault(sim, "claude", fail_next=2, error_status=500)
    task_id = review(ctx)
    assert runner(ctx).run(task_id) == "succeeded"
    row = detail(ctx, task_id)
    (attempt,) = row["attempts"]
    assert (attempt["provider"], attempt["status"]) == ("claude", "succeeded")
    tries = attempt["tries"]
    assert [(t["try"], t["status"], t["error_class"], t["http_status"]) for t in tries] == [
        (1, "failed", "TransientError", 500),
        (2, "failed", "TransientError", 500),
        (3, "succeeded", None, None),
    ]
    assert tries[0]["started_at"] <= tries[0]["ended_at"] <= tries[1]["started_at"] <= tries[2]["ended_at"]
    assert "Internal server error (simulator)" in tries[0]["error"]
    with console.capture() as captured:
        show_detail(row)
    shown = captured.get()
    assert "Tries (UTC)" in shown and "TransientError (HTTP 500)" in shown and "succeeded" in shown

    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(
        SWITCHYARD_HOME=str(ctx.settings.home),
        SWITCHYARD_DATABASE_URL=ctx.database_url,
        SWITCHYARD_FLEET_FILE=str(ctx.settings.fleet_file),
        COLUMNS="250",
    )
    switchyard = str(Path(sys.executable).parent / "switchyard")
    done = subprocess.run(
        [switchyard, "tasks", "show", task_id[:8], "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["attempts"][0]["tries"] == tries
