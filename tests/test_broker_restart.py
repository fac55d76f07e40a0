"""A broker blip with real `celery worker` processes: the embedded valkey is killed with -9 while tasks run
and started again; every worker stays alive and consumes again, and every task reaches its terminal status
(messages lost with the broker are re-sent by the outbox's sender, run by celery beat)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import NO_PROVIDER_KEYS, free_port, port_open
from pipeline_kit import fleet_file, tasks

from cli.envs import init_environments
from environments.sample import make_sample_repo
from store.models import TERMINAL_STATUSES
from switchyard.errors import NotYetSent
from switchyard.settings import Settings
from tasks.context import Context, build_context
from tasks.submit import submit
from workers import broker, launcher

pytestmark = pytest.mark.integration
Fleet = tuple[Context, list[launcher.RunningService], list[subprocess.Popen[bytes]]]
FAST_OUTBOX = (
    "\n[outbox]\nevery_s = 3.0\ngrace_s = 2.0\nretry_initial_s = 1.0\nretry_max_s = 5.0\nlost_after_s = 20.0\n"
)


@pytest.fixture
def fleet(tmp_path: Path, sqlite_url: str) -> Iterator[Fleet]:
    path = fleet_file(tmp_path, **{"[simulator.ollama]\nlatency_ms = 60": "[simulator.ollama]\nlatency_ms = 2500"})
    path.write_text(path.read_text() + FAST_OUTBOX)
    settings = Settings(
        home=tmp_path / "home",
        broker_port=free_port(),
        database_url=sqlite_url,
        simulate=True,
        simulator_port=free_port(),
        api_port=free_port(),
        flower_port=free_port(),
        fleet_file=path,
        **NO_PROVIDER_KEYS,
    )
    ctx = build_context(settings)
    init_environments(ctx, str(make_sample_repo(tmp_path / "sample", feature_branches=1)), tmp_path / "ws", ["dev1"])
    names = {"broker", "simulator", "beat"} | {f"worker-{g.name}" for g in ctx.fleet.groups}
    started = launcher.up(settings, ctx.fleet, simulate=True, services=names, on_event=lambda _: None, timeout_s=300)
    restarted: list[subprocess.Popen[bytes]] = []
    try:
        yield ctx, started, restarted
    finally:
        launcher.down(settings, on_event=lambda _: None)
        for proc in restarted:
            if proc.poll() is None:
                broker.shutdown(settings, proc)


def statuses(ctx: Context, ids: list[str]) -> dict[str, str]:
    return {t.id: t.status for t in tasks(ctx) if t.id in ids}


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


def chore(ctx: Context, n: int) -> str:
    request = {"kind": "dev_task", "environment": "dev1", "title": f"chore {n}"}
    try:
        return submit(request, context=ctx)
    except NotYetSent as exc:  # the broker was still starting: recorded, the outbox sends it
        return exc.task_id


def test_every_worker_survives_a_broker_kill_and_no_task_is_lost(
    fleet: Fleet,
) -> None:
    ctx, started, restarted = fleet
    workers = [s for s in started if s.name.startswith("worker-")]
    before = [chore(ctx, n) for n in range(6)]
    wait_for(lambda: "running" in statuses(ctx, before).values(), 120, "a task running before the kill")

    settings = ctx.settings
    os.kill(int(broker.broker_paths(settings).pidfile.read_text()), signal.SIGKILL)
    wait_for(lambda: not port_open("127.0.0.1", settings.broker_port), 30, "the broker gone")
    time.sleep(3)  # workers notice and start reconnecting
    restarted.append(broker.start_broker(settings, timeout_s=60))

    after = [chore(ctx, n) for n in range(6, 9)]
    everything = before + after
    wait_for(
        lambda: set(statuses(ctx, everything).values()) <= set(TERMINAL_STATUSES),
        420,
        f"every task terminal: {statuses(ctx, everything)}",
    )
    assert set(statuses(ctx, everything).values()) == {"succeeded"}, statuses(ctx, everything)
    assert all(w.process.poll() is None for w in workers), [(w.name, w.process.poll()) for w in workers]
