"""A worker killed with SIGKILL in the middle of a task: another worker of its group takes the task over
once the lease runs out, well before the broker's visibility timeout would bring the message back. Real
`celery worker` processes and `celery beat` on Redis and PostgreSQL, the simulator over HTTP, real git.

The fleet file shortens the lease (6 s, renewed every 1.5 s, checked every 2 s); the simulator's latency
keeps the provider call (or the merge's check) running long enough to kill the worker in the middle of it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import REPO, Processes, patient
from pipeline_kit import detail, git, make_context
from sqlalchemy import select
from test_merge_queue import integ, set_check, slow_check

from simulator.server import BackgroundSimulator
from store.db import session_scope
from store.models import TERMINAL_STATUSES, Spend, Task
from tasks.app import app_for
from tasks.context import Context
from tasks.submit import submit
from workers.services import beat_args, child_env, worker_args

pytestmark = pytest.mark.integration
LEASE_S, CHECK_EVERY_S = 6.0, 2.0
# the takeover itself: the lease runs out, the next detector round, the message is picked up; the slack is
# for a loaded machine (load 15: a worker may take seconds to fetch a message and open a connection)
TAKEOVER_LIMIT_S = LEASE_S + CHECK_EVERY_S + 25.0


@pytest.fixture
def ctx(tmp_path: Path, server: BackgroundSimulator, redis_url: str, postgres_url: str) -> Context:
    limits = {
        "visibility_timeout_s = 3600": "visibility_timeout_s = 60\nmax_defer_countdown_s = 20",
        "task_time_limit_s = 900": "task_time_limit_s = 50",
        "lease_s = 60.0": f"lease_s = {LEASE_S}",
        "lease_renew_every_s = 15.0": "lease_renew_every_s = 1.5",
        "lease_check_every_s = 15.0": f"lease_check_every_s = {CHECK_EVERY_S}",
    }
    return make_context(tmp_path, server.url, redis_url, postgres_url, **limits)


def start_worker(ctx: Context, processes: Processes, group: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    args = worker_args(ctx.fleet.group(group))
    args[args.index("-n") + 1] = f"{name}@%h"
    return _spawn(ctx, processes, args, log)


def start_beat(ctx: Context, processes: Processes, tmp_path: Path) -> subprocess.Popen[bytes]:
    return _spawn(ctx, processes, beat_args(tmp_path / "beat-schedule"), tmp_path / "beat.log")


def _spawn(ctx: Context, processes: Processes, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = child_env(ctx.settings, simulate=True, base_env=os.environ)
    with log.open("ab") as out:
        return processes.spawn([sys.executable, "-m", "celery", *args], env=env, cwd=REPO, stdout=out, stderr=out)


def wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + patient(timeout)
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def lease_of(ctx: Context, task_id: str) -> tuple[str, str | None]:
    with session_scope(ctx.database_url) as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task.status, task.lease_owner


def owner_pid(ctx: Context, task_id: str) -> int | None:
    """The pid of the worker that runs the task now (a run's lease owner is host/pid/…)."""
    status, owner = lease_of(ctx, task_id)
    if status != "running" or owner is None or owner.count("/") != 2:
        return None
    return int(owner.split("/")[1])


def holds(ctx: Context, task_id: str) -> dict[int, str]:
    with session_scope(ctx.database_url) as session:
        return {s.attempt: s.state for s in session.scalars(select(Spend).where(Spend.task_id == task_id))}


def test_a_killed_workers_task_is_taken_over_by_another_worker_of_its_group(
    tmp_path: Path, ctx: Context, processes: Processes, server: BackgroundSimulator
) -> None:
    claude = server.sim.providers["claude"]
    workers = {
        w.pid: w
        for w in (
            start_worker(ctx, processes, "pr_review", f"review-{n}", tmp_path / f"worker-{n}.log") for n in (1, 2)
        )
    }
    start_beat(ctx, processes, tmp_path)
    httpx.post(f"{server.url}/_sim/providers/claude", json={"latency_ms": 20_000}).raise_for_status()
    calls = claude.calls
    task_id = submit({"kind": "pr_review", "environment": "dev1", "branch": "feature/sample-1"}, context=ctx)
    pid = wait_for("a worker to run the task", lambda: owner_pid(ctx, task_id), timeout=120)
    wait_for("the provider call", lambda: claude.calls == calls + 1, timeout=60)
    call_started = time.monotonic()
    # a second delivery while the first runs under a live lease: it ends quietly
    app_for(ctx).send_task("switchyard.pr_review", args=[task_id], task_id=task_id, queue="pr_review")
    logs = [tmp_path / f"worker-{n}.log" for n in (1, 2)]
    wait_for("the duplicate to end", lambda: any("under a live lease" in p.read_text() for p in logs), timeout=60)
    assert claude.calls == calls + 1 and lease_of(ctx, task_id)[0] == "running"
    # the call outlasts its lease and a detector round: renewed, so never taken from the live worker
    wait_for("a lease and a detector round", lambda: time.monotonic() - call_started > LEASE_S + CHECK_EVERY_S, 60)
    assert owner_pid(ctx, task_id) == pid and claude.calls == calls + 1
    assert "lost its worker" not in "".join(p.read_text() for p in logs)

    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    workers[pid].wait(timeout=10)
    wait_for("another worker to take over", lambda: (owner_pid(ctx, task_id) or pid) != pid, timeout=120)
    took = time.monotonic() - killed
    httpx.post(f"{server.url}/_sim/providers/claude", json={"latency_ms": 0}).raise_for_status()
    wait_for("the task to finish", lambda: lease_of(ctx, task_id)[0] in TERMINAL_STATUSES, timeout=120)

    print(f"taken over {took:.1f}s after the kill")
    assert took < TAKEOVER_LIMIT_S, f"taken over {took:.1f}s after the kill"
    done = detail(ctx, task_id)
    assert done["status"] == "succeeded", done["reason"]
    attempts = [(a["provider"], a["status"], a["error_class"]) for a in done["attempts"]]
    # the dead worker's call was left open: the provider may have charged it, so its hold is charged as unknown cost
    assert attempts == [("claude", "failed", "UnknownCost"), ("claude", "succeeded", None)]
    assert holds(ctx, task_id) == {1: "settled", 2: "settled"}
    assert claude.calls == calls + 2  # the lost call, and the one that answered
    assert done["finished_at"] is not None


def test_a_killed_integration_frees_its_merge_queue_within_a_lease(
    tmp_path: Path, ctx: Context, processes: Processes
) -> None:
    set_check(ctx, slow_check(tmp_path, 8.0))
    runs = tmp_path / "runs"
    before = git(ctx, "rev-parse", "env/dev1")
    workers = {
        w.pid: w
        for w in (start_worker(ctx, processes, "pr_integ", f"integ-{n}", tmp_path / f"worker-{n}.log") for n in (1, 2))
    }
    start_beat(ctx, processes, tmp_path)
    first, second = integ(ctx, "feature/sample-1"), integ(ctx, "feature/sample-2")
    wait_for("the first check", lambda: runs.exists() and runs.read_text().count("run") == 1, timeout=120)
    pid = owner_pid(ctx, first)
    assert pid in workers and lease_of(ctx, second)[0] != "running"
    os.kill(pid, signal.SIGKILL)  # mid-check, holding the environment's lock and the head of its merge queue
    killed = time.monotonic()
    workers[pid].wait(timeout=10)
    wait_for("the check to run again", lambda: runs.read_text().count("run") >= 2, timeout=120)
    took = time.monotonic() - killed
    wait_for("both", lambda: all(lease_of(ctx, i)[0] in TERMINAL_STATUSES for i in (first, second)), timeout=180)

    print(f"the merge queue moved again {took:.1f}s after the kill")
    assert took < TAKEOVER_LIMIT_S, f"the merge queue moved again {took:.1f}s after the kill"
    one, two = detail(ctx, first), detail(ctx, second)
    assert (one["status"], two["status"]) == ("succeeded", "succeeded"), (one["reason"], two["reason"])
    (m1,), (m2,) = one["merges"], two["merges"]
    assert m1["base_sha"] == before and m2["base_sha"] == m1["merge_sha"]  # in submission order
    assert git(ctx, "rev-parse", "env/dev1") == m2["merge_sha"]
    assert runs.read_text().count("run") == 3  # the killed check, its re-run, the second integration's
