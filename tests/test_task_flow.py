"""Every task kind end to end: real `celery worker` processes on Redis, PostgreSQL, the simulator over HTTP
through the official SDKs, and real git. Also the fallback ladder, a refused merge, and redelivery without a
second provider call or charge."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import NO_PROVIDER_KEYS, REPO, flushed_redis, free_port, patient, postgres_database
from pipeline_kit import fleet_file
from sqlalchemy import func, select

from cli.envs import init_environments
from environments.git import run_git
from environments.sample import make_sample_repo
from routing.state import transition_history
from simulator.answers import identifier
from store.db import session_scope
from store.models import TERMINAL_STATUSES, Attempt, Spend, Task
from store.queries import as_utc, task_detail
from switchyard.settings import Settings
from tasks.attempt import Runner
from tasks.context import Context, build_context
from tasks.submit import submit
from workers import launcher

pytestmark = pytest.mark.integration
SERVICES = {
    "simulator",
    "worker-high_level",
    "worker-dev_workers",
    "worker-pr_review",
    "worker-pr_impl",
    "worker-pr_integ",
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    """One fleet for the module: five real worker pools on Redis and PostgreSQL, and the simulator."""
    tmp_path = tmp_path_factory.mktemp("flow")
    with postgres_database() as database_url:
        settings = Settings(
            **NO_PROVIDER_KEYS,
            home=tmp_path / "home",
            broker_url=flushed_redis(14),
            database_url=database_url,
            simulate=True,
            simulator_port=free_port(),
            api_port=free_port(),
            flower_port=free_port(),
            fleet_file=fleet_file(tmp_path),
        )
        ctx = build_context(settings)
        sample = make_sample_repo(tmp_path / "sample", feature_branches=4)
        init_environments(ctx, str(sample), tmp_path / "workspace", ["dev1"])
        launcher.up(
            settings,
            ctx.fleet,
            simulate=True,
            services=SERVICES,
            on_event=lambda _: None,
        )
        try:
            yield ctx
        finally:
            launcher.down(settings, on_event=lambda _: None)


@pytest.fixture
def workspace(fleet: Context) -> Path:
    return fleet.settings.home.parent / "workspace"


def wait_terminal(ctx: Context, ids: list[str], timeout: float = 60.0) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + patient(timeout)
    while time.monotonic() < deadline:
        with session_scope(ctx.database_url) as session:
            details = {i: task_detail(session, i) for i in ids}
        if all(d is not None and d["status"] in TERMINAL_STATUSES for d in details.values()):
            return {i: d for i, d in details.items() if d is not None}
        time.sleep(0.3)
    raise AssertionError(f"tasks did not finish: { {i: d and d['status'] for i, d in details.items()} }")


def sim_state(ctx: Context) -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(f"{ctx.settings.effective_simulator_url}/_sim/state").json()
    return state


def sim_calls(ctx: Context, provider: str) -> int:
    return int(sim_state(ctx)["providers"][provider]["calls"])


def test_every_kind_runs_to_success(fleet: Context, workspace: Path) -> None:
    ctx = fleet
    ids = {
        "plan": submit({"kind": "plan", "environment": "dev1", "goal": "add a health endpoint"}, context=ctx),
        "dev_task": submit({"kind": "dev_task", "environment": "dev1", "title": "release notes"}, context=ctx),
        # pipeline off: its review and integration would move env/dev1 under the tests that follow
        "pr_impl": submit(
            {"kind": "pr_impl", "environment": "dev1", "title": "greeting", "pipeline": False}, context=ctx
        ),
        "pr_review": submit({"kind": "pr_review", "environment": "dev1", "branch": "feature/sample-1"}, context=ctx),
        "pr_integ": submit({"kind": "pr_integ", "environment": "dev1", "branch": "feature/sample-2"}, context=ctx),
    }
    done = wait_terminal(ctx, list(ids.values()), timeout=240)  # the plan ends once its sub-tasks landed
    assert {k: done[i]["status"] for k, i in ids.items()} == dict.fromkeys(ids, "succeeded")
    expected = {"plan": "claude", "dev_task": "ollama", "pr_impl": "codex", "pr_review": "claude", "pr_integ": "ollama"}
    assert {k: done[i]["provider"] for k, i in ids.items()} == expected
    assert done[ids["pr_review"]]["cost_usd"] > 0 and done[ids["pr_impl"]]["cost_usd"] > 0
    assert done[ids["pr_integ"]]["cost_usd"] == 0

    repo = workspace / ".repo"
    review = done[ids["pr_review"]]["result"]["data"]
    assert review["verdict"] in {"approve", "request_changes", "comment"}
    assert review["comments"][0]["file"] == "app/feature_1.py"

    impl = done[ids["pr_impl"]]["result"]["data"]
    files = run_git(["show", "--name-only", "--format=", impl["commit"]], cwd=repo).split()
    assert files == ["greeting.py"]  # a module named after the title, with a function greeting()
    assert run_git(["rev-parse", impl["branch"]], cwd=repo).strip() == impl["commit"]
    assert not (workspace / ".tasks" / ids["pr_impl"]).exists()

    run_git(["cat-file", "-e", "env/dev1:app/feature_2.py"], cwd=repo)  # merged into the environment branch

    children = done[ids["plan"]]["children"]
    assert len(children) == 2
    finished = wait_terminal(ctx, [c["id"] for c in children])
    assert all(c["status"] == "succeeded" and c["parent"]["id"] == ids["plan"] for c in finished.values())


def test_conflicting_merge_fails_naming_the_file_and_leaves_the_branch(fleet: Context, workspace: Path) -> None:
    ctx = fleet
    repo = workspace / ".repo"
    for name, text in (("conflict-a", "A"), ("conflict-b", "B")):
        work = workspace.parent / name
        run_git(["worktree", "add", "-b", name, str(work), "env/dev1"], cwd=repo)
        (work / "app" / "greeting.py").write_text(f"GREETING = {text!r}\n")
        run_git(["commit", "-qam", f"greeting {text}"], cwd=work)
    first = submit({"kind": "pr_integ", "environment": "dev1", "branch": "conflict-a"}, context=ctx)
    assert wait_terminal(ctx, [first])[first]["status"] == "succeeded"
    before = run_git(["rev-parse", "env/dev1"], cwd=repo)
    second = submit({"kind": "pr_integ", "environment": "dev1", "branch": "conflict-b"}, context=ctx)
    result = wait_terminal(ctx, [second])[second]
    assert result["status"] == "failed"
    assert "app/greeting.py" in result["reason"]
    (attempt,) = result["attempts"]
    assert (attempt["status"], attempt["error_class"]) == ("failed", "MergeConflict")
    assert run_git(["rev-parse", "env/dev1"], cwd=repo) == before
    assert run_git(["status", "--porcelain"], cwd=workspace / "dev1") == ""


def test_a_failing_provider_falls_back_to_the_next_rung(fleet: Context) -> None:
    ctx = fleet
    url = ctx.settings.effective_simulator_url
    httpx.post(f"{url}/_sim/providers/claude", json={"error_rate": 1.0, "error_status": 500}).raise_for_status()
    before = sim_calls(ctx, "claude")
    try:
        task_id = submit({"kind": "pr_review", "environment": "dev1", "branch": "feature/sample-3"}, context=ctx)
        detail = wait_terminal(ctx, [task_id])[task_id]
    finally:
        httpx.post(f"{url}/_sim/providers/claude/heal").raise_for_status()
    assert detail["status"] == "succeeded"
    assert detail["provider"] == "ollama"
    first, second = detail["attempts"]
    assert (first["provider"], first["status"], first["error_class"]) == ("claude", "failed", "TransientError")
    assert (second["provider"], second["status"]) == ("ollama", "succeeded")
    assert sim_calls(ctx, "claude") - before == ctx.fleet.retry.attempts  # tenacity's retries, none by the SDK


def test_redelivery_reuses_the_stored_answer(fleet: Context) -> None:
    ctx = fleet
    task_id = submit({"kind": "pr_review", "environment": "dev1", "branch": "feature/sample-1"}, context=ctx)
    assert wait_terminal(ctx, [task_id])[task_id]["status"] == "succeeded"
    calls = sim_calls(ctx, "claude")
    with session_scope(ctx.database_url) as session:  # as if the worker died after the answer was stored
        session.get(Task, task_id).status = "running"  # type: ignore[union-attr]
        session.query(Attempt).filter_by(task_id=task_id).update({"status": "answered"})
    assert Runner(ctx).run(task_id) == "succeeded"
    assert sim_calls(ctx, "claude") == calls
    with session_scope(ctx.database_url) as session:
        charges = session.scalar(select(func.count()).select_from(Spend).where(Spend.task_id == task_id))
        attempts = session.scalar(select(func.count()).select_from(Attempt).where(Attempt.task_id == task_id))
    assert (charges, attempts) == (1, 1)


def test_a_finished_task_is_not_run_again(fleet: Context) -> None:
    ctx = fleet
    task_id = submit({"kind": "pr_integ", "environment": "dev1", "branch": "feature/sample-4"}, context=ctx)
    assert wait_terminal(ctx, [task_id])[task_id]["status"] == "succeeded"
    calls = sim_calls(ctx, "ollama")
    assert Runner(ctx).run(task_id) == "finished already"
    assert sim_calls(ctx, "ollama") == calls


def test_twenty_reviews_with_claude_down_all_succeed_on_the_next_rung(fleet: Context) -> None:
    """Claude failing outright: every review succeeds on Ollama, and Claude sees at most the breaker's
    threshold of calls (plus probes, none within the open interval): the breaker is shared by the workers."""
    ctx = fleet
    url = ctx.settings.effective_simulator_url
    breakers = ctx.breakers()
    breakers.reset("claude")
    started = datetime.now(UTC)
    httpx.post(f"{url}/_sim/providers/claude", json={"error_rate": 1.0, "error_status": 500}).raise_for_status()
    before = sim_calls(ctx, "claude")
    try:
        branches = [f"feature/sample-{1 + i % 4}" for i in range(20)]
        ids = [submit({"kind": "pr_review", "environment": "dev1", "branch": b}, context=ctx) for b in branches]
        done = wait_terminal(ctx, ids, timeout=120)
        claude_calls = sim_calls(ctx, "claude") - before
        state = breakers.status(["claude"])["claude"]
    finally:
        httpx.post(f"{url}/_sim/providers/claude/heal").raise_for_status()
        breakers.reset("claude")
    assert [d["status"] for d in done.values()] == ["succeeded"] * 20
    assert {d["provider"] for d in done.values()} == {"ollama"}
    tried = [(a["provider"], a["status"], a["error_class"]) for d in done.values() for a in d["attempts"]]
    assert state.state == "open", (state, claude_calls, tried)
    history = transition_history(ctx.database_url, "claude")
    probes = sum(1 for t in history if t["to"] == "half_open" and as_utc(t["at"]) > started)
    assert 0 < claude_calls <= ctx.fleet.breaker.failure_threshold + probes
    skipped = [d for d in done.values() if all(a["provider"] == "ollama" for a in d["attempts"])]
    assert len(skipped) >= 10  # most never tried Claude: the router saw the open breaker before calling
    notes = [a.get("route_note") or "" for d in skipped for a in d["attempts"]]
    assert all("claude" in note and "open" in note for note in notes), notes


def cli_env(ctx: Context) -> dict[str, str]:
    """The environment a user's shell would have for this fleet's `switchyard` commands."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    settings = ctx.settings
    base.update(
        SWITCHYARD_HOME=str(settings.home),
        SWITCHYARD_BROKER_URL=str(settings.broker_url),
        SWITCHYARD_DATABASE_URL=ctx.database_url,
        SWITCHYARD_FLEET_FILE=str(settings.fleet_file),
        COLUMNS="200",
    )
    return base


def submit_and_wait(ctx: Context, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(REPO / ".venv" / "bin" / "switchyard"), "submit", *args, "--wait", "--json", "--timeout", "600"]
    return subprocess.run(command, env=cli_env(ctx), capture_output=True, text=True, timeout=700, check=False)


def on_branch(workspace: Path, branch: str, path: str) -> bool:
    done = subprocess.run(["git", "cat-file", "-e", f"{branch}:{path}"], cwd=workspace / ".repo", check=False)
    return done.returncode == 0


def change_landed(workspace: Path, title: str, task_id: str) -> bool:
    """The simulator's change for a task (a module named after its title, or after title and id when a module
    of that name was there already) is on env/dev1."""
    name = identifier(title, f"change_{task_id[:8]}")
    return any(on_branch(workspace, "env/dev1", path) for path in (f"{name}.py", f"{name}_{task_id[:8]}.py"))


def test_a_plan_waited_for_lands_its_sub_tasks_on_the_environment_branch(fleet: Context, workspace: Path) -> None:
    """`submit plan --wait` returns when every sub-task's change was reviewed and merged into env/dev1."""
    done = submit_and_wait(fleet, "plan", "--env", "dev1", "--goal", "add a health endpoint")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert (report["outcome"], report["complete"]) == ("landed", True)
    plan = task_detail_now(fleet, report["id"])
    assert plan["status"] == "succeeded" and plan["result"]["data"]["outcome"] == "succeeded"
    subtasks = plan["result"]["data"]["subtasks"]
    assert len(subtasks) == 2 and all(sub["landed"] for sub in subtasks)
    for sub in subtasks:  # each change is on the environment branch at the moment --wait returned
        assert change_landed(workspace, sub["title"], sub["id"]), sub
    kinds = [link["kind"] for link in report["links"]]
    assert kinds.count("pr_review") == 2 and kinds.count("pr_integ") == 2
    assert all(link["status"] == "succeeded" for link in report["links"])


def test_a_pr_impl_waited_for_is_merged_when_wait_returns(fleet: Context, workspace: Path) -> None:
    done = submit_and_wait(fleet, "pr_impl", "--env", "dev1", "--title", "a waited change")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["outcome"] == "landed" and report["why"].startswith("merged into env/dev1 at ")
    assert [link["kind"] for link in report["links"]] == ["pr_impl", "pr_review", "pr_integ"]
    assert change_landed(workspace, "a waited change", report["id"])
    text = subprocess.run(  # the people's view: one line per link, then how it ended
        [str(REPO / ".venv" / "bin" / "switchyard"), "submit", "pr_impl", "--env", "dev1", "--title", "again",
         "--no-pipeline", "--wait"],
        env=cli_env(fleet), capture_output=True, text=True, timeout=700, check=False,
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert "pr_impl" in text.stdout and "succeeded: " in text.stdout


def task_detail_now(ctx: Context, task_id: str) -> dict[str, Any]:
    with session_scope(ctx.database_url) as session:
        found = task_detail(session, task_id)
    assert found is not None
    return found


def test_retry_wait_follows_the_retried_task_through_its_pipeline(fleet: Context, workspace: Path) -> None:
    """`tasks retry ID --wait` prints the chain the retry set going, as `submit --wait` does, and lands it."""
    ctx = fleet
    switchyard = str(REPO / ".venv" / "bin" / "switchyard")

    def codex_cap(cap: str) -> None:
        command = [switchyard, "budget", "set", "--scope", "provider", "--target", "codex", "--window", "day"]
        done = subprocess.run([*command, "--cap", cap], env=cli_env(ctx), capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr

    codex_cap("0")  # codex cannot be paid for and ollama is avoided: the task ends budget_exhausted at once
    try:
        request = {"kind": "pr_impl", "environment": "dev1", "title": "a retried change", "avoid_providers": ["ollama"]}
        task_id = submit(request, context=ctx)
        assert wait_terminal(ctx, [task_id])[task_id]["status"] == "budget_exhausted"
    finally:
        codex_cap("50")
    command = [switchyard, "tasks", "retry", task_id[:8], "--wait", "--json", "--timeout", "600"]
    done = subprocess.run(command, env=cli_env(ctx), capture_output=True, text=True, timeout=700, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert (report["id"], report["outcome"], report["complete"]) == (task_id, "landed", True)
    assert [link["kind"] for link in report["links"]] == ["pr_impl", "pr_review", "pr_integ"]
    assert change_landed(workspace, "a retried change", task_id)
