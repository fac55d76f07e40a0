"""The merge queue: integrations for one environment merge one at a time, in submission order, and a worker
killed in the middle of an integration leaves the environment branch intact while the task is retried.

In-process threads first (SQLite), then real `celery worker` processes on Redis and PostgreSQL, with the
simulator over HTTP and real git."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Processes, patient
from pipeline_kit import detail, factory, git, make_context, workspace

from simulator.server import BackgroundSimulator
from store.db import session_scope
from store.models import TERMINAL_STATUSES, Environment
from tasks.attempt import Deferred, Runner
from tasks.context import Context
from tasks.submit import submit
from workers.services import beat_args, child_env, worker_args

pytestmark = pytest.mark.integration


def set_check(ctx: Context, command: str) -> None:
    with session_scope(ctx.database_url) as session:
        for env in session.query(Environment):
            env.check_command = command


def slow_check(tmp_path: Path, seconds: float) -> str:
    """A check that notes each run in ``runs`` (one line per run), then takes ``seconds``."""
    runs = tmp_path / "runs"
    note = f"f = pathlib.Path({str(runs)!r}).open('a'); f.write('run\\n'); f.close()"
    code = f"import pathlib, time; {note}; time.sleep({seconds})"
    return shlex.join([sys.executable, "-c", code])


def first_run_hangs(tmp_path: Path) -> str:
    """Like :func:`slow_check` (4 s), but the first run notes its pid and would sleep 600 s: only the guard that
    kills a check with its worker ends it in time."""
    runs, pids = tmp_path / "runs", tmp_path / "check-pids"
    note = f"f = pathlib.Path({str(runs)!r}).open('a'); f.write('run\\n'); f.close()"
    pid = f"pathlib.Path({str(pids)!r}).open('a').write(f'{{os.getpid()}}\\n')"
    first = f"pathlib.Path({str(runs)!r}).read_text().count('run') == 1"
    code = f"import os, pathlib, time; {note}; {pid}; time.sleep(600 if {first} else 4)"
    return shlex.join([sys.executable, "-c", code])


def process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def integ(ctx: Context, branch: str) -> str:
    return submit({"kind": "pr_integ", "environment": "dev1", "branch": branch}, context=ctx)


def assert_merged_in_order(ctx: Context, first: str, second: str, before: str) -> None:
    one, two = detail(ctx, first), detail(ctx, second)
    assert (one["status"], two["status"]) == ("succeeded", "succeeded"), (one["reason"], two["reason"])
    (m1,), (m2,) = one["merges"], two["merges"]
    assert m1["base_sha"] == before and m2["base_sha"] == m1["merge_sha"]  # the second merged onto the first
    assert git(ctx, "rev-parse", "env/dev1") == m2["merge_sha"]
    assert git(ctx, "rev-parse", "env/dev1^1") == m1["merge_sha"]


def test_two_integrations_at_once_merge_in_submission_order_in_process(
    tmp_path: Path, server: BackgroundSimulator, redis_url: str, sqlite_url: str
) -> None:
    ctx = make_context(tmp_path, server.url, redis_url, sqlite_url)
    set_check(ctx, slow_check(tmp_path, 0.5))
    before = git(ctx, "rev-parse", "env/dev1")
    first, second = integ(ctx, "feature/sample-1"), integ(ctx, "feature/sample-2")
    waits: dict[str, list[str]] = {first: [], second: []}
    barrier = threading.Barrier(2)

    def run(task_id: str) -> None:
        runner = Runner(ctx, make_provider=factory(), sleep=lambda _: None)
        barrier.wait()
        for _ in range(200):
            try:
                runner.run(task_id)
                return
            except Deferred as exc:
                waits[task_id].append(str(exc))
                time.sleep(0.05)

    threads = [threading.Thread(target=run, args=(i,)) for i in (second, first)]  # the later one starts first
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert_merged_in_order(ctx, first, second, before)
    assert waits[first] == []
    assert waits[second] and all(f"behind {first[:8]}" in reason for reason in waits[second])


# --- real workers ----------------------------------------------------------------------------------------


def start_worker(ctx: Context, processes: Processes, log: Path) -> subprocess.Popen[bytes]:
    group = ctx.fleet.group("pr_integ")
    env = child_env(ctx.settings, simulate=True, base_env=os.environ)
    with log.open("ab") as out:
        return processes.spawn(
            [sys.executable, "-m", "celery", *worker_args(group)],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_until(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + patient(timeout)
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status(ctx: Context, task_id: str) -> str:
    return str(detail(ctx, task_id)["status"])


@pytest.fixture
def worker_ctx(tmp_path: Path, server: BackgroundSimulator, redis_url: str, postgres_url: str) -> Context:
    limits = {  # a 60 s visibility timeout: a killed worker's task is redelivered a minute later
        "visibility_timeout_s = 3600": "visibility_timeout_s = 60\nmax_defer_countdown_s = 20",
        "task_time_limit_s = 900": "task_time_limit_s = 50",
    }
    return make_context(tmp_path, server.url, redis_url, postgres_url, **limits)


def test_two_integrations_at_once_merge_in_order_on_a_real_worker(
    tmp_path: Path, worker_ctx: Context, processes: Processes
) -> None:
    ctx = worker_ctx
    set_check(ctx, slow_check(tmp_path, 1.0))
    before = git(ctx, "rev-parse", "env/dev1")
    start_worker(ctx, processes, tmp_path / "worker.log")
    first, second = integ(ctx, "feature/sample-1"), integ(ctx, "feature/sample-2")
    seen: set[str] = set()

    def both_done() -> bool:
        seen.add(detail(ctx, second)["reason"] or "")
        return status(ctx, first) in TERMINAL_STATUSES and status(ctx, second) in TERMINAL_STATUSES

    wait_until("both integrations", both_done, timeout=90)
    assert_merged_in_order(ctx, first, second, before)
    assert any(f"waiting in the merge queue of dev1/dev behind {first[:8]}" in reason for reason in seen)


def test_a_worker_killed_during_an_integration_leaves_the_branch_intact_and_the_task_retried(
    tmp_path: Path, worker_ctx: Context, processes: Processes, server: BackgroundSimulator
) -> None:
    ctx = worker_ctx
    set_check(ctx, first_run_hangs(tmp_path))
    runs = tmp_path / "runs"
    before = git(ctx, "rev-parse", "env/dev1")
    calls = server.sim.providers["ollama"].calls
    worker = start_worker(ctx, processes, tmp_path / "worker-1.log")
    beat_env = child_env(ctx.settings, simulate=True, base_env=os.environ)  # the lease detector, as `up` runs it
    with (tmp_path / "beat.log").open("ab") as out:
        beat = [sys.executable, "-m", "celery", *beat_args(tmp_path / "beat-schedule")]
        processes.spawn(beat, env=beat_env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    task_id = integ(ctx, "feature/sample-3")
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:  # every value env/dev1 takes while this runs
        while not stop.is_set():
            seen.add(git(ctx, "rev-parse", "env/dev1"))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        wait_until("the check to start", lambda: runs.exists() and runs.read_text().count("run") == 1, timeout=60)
        pids = tmp_path / "check-pids"
        wait_until("the check's pid", lambda: pids.exists() and pids.read_text().endswith("\n"), timeout=60)
        os.kill(worker.pid, signal.SIGKILL)  # mid-check: the merge exists only in the task's worktree
        worker.wait(timeout=10)
        assert git(ctx, "rev-parse", "env/dev1") == before and status(ctx, task_id) == "running"
        check_pid = int(pids.read_text().split()[0])
        wait_until("the killed worker's check to end", lambda: not process_alive(check_pid), timeout=90)
        start_worker(ctx, processes, tmp_path / "worker-2.log")
        wait_until("the redelivered task", lambda: status(ctx, task_id) in TERMINAL_STATUSES, timeout=200)
    finally:
        stop.set()
        watcher.join(timeout=10)
    done = detail(ctx, task_id)
    assert done["status"] == "succeeded", done["reason"]
    (merge,) = done["merges"]
    assert runs.read_text().count("run") == 2  # the check ran again on the redelivered task
    assert seen == {before, merge["merge_sha"]}  # never anything in between
    assert git(ctx, "rev-parse", "env/dev1") == merge["merge_sha"]
    assert git(ctx, "rev-parse", "env/dev1^1") == before and git(ctx, "rev-parse", "env/dev1^2") == git(
        ctx, "rev-parse", "feature/sample-3"
    )
    assert [a["provider"] for a in done["attempts"]] == ["ollama"]  # acted again on the stored answer
    assert server.sim.providers["ollama"].calls == calls + 1
    assert not (workspace(ctx) / ".tasks" / task_id).exists()
