"""A broker blip with real `celery worker` processes: the embedded valkey is killed with -9 while tasks run
and started again; every worker stays alive and consumes again, and every task reaches its terminal status
(messages lost with the broker are re-sent by the outbox's sender, run by celery beat)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from conftest import NO_PROVIDER_KEYS, REPO, Processes, flushed_redis, free_port, patient, port_open
from pipeline_kit import fleet_file, tasks
from sqlalchemy import func, select

import celeryconfig
from cli.envs import init_environments
from environments.sample import make_sample_repo
from store.db import session_scope
from store.models import TERMINAL_STATUSES, Attempt
from switchyard.errors import NotYetSent
from switchyard.settings import Settings
from tasks.context import Context, build_context
from tasks.submit import submit
from workers import broker, launcher
from workers.readiness import ReadyPolicy

pytestmark = pytest.mark.integration
SLOW = {"ollama": 60, "codex": 40}  # the dev_task ladder and its default simulator latencies
Fleet = tuple[Context, list[launcher.RunningService], list[subprocess.Popen[bytes]]]
FAST_OUTBOX = {  # the sender every 3 s, a lost message re-sent 20 s after its send
    "every_s = 15.0\ngrace_s = 20.0\nretry_initial_s = 2.0\nretry_max_s = 60.0\nlost_after_s = 30.0": (
        "every_s = 3.0\ngrace_s = 2.0\nretry_initial_s = 1.0\nretry_max_s = 5.0\nlost_after_s = 20.0"
    )
}


@pytest.fixture
def fleet(tmp_path: Path, sqlite_url: str) -> Iterator[Fleet]:
    slow = {f"[simulator.{p}]\nlatency_ms = {ms}": f"[simulator.{p}]\nlatency_ms = 4000" for p, ms in SLOW.items()}
    path = fleet_file(tmp_path, **slow, **FAST_OUTBOX)  # every dev_task rung answers in 4 s: calls in flight
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
    started = launcher.up(
        settings, ctx.fleet, simulate=True, services=names, on_event=lambda _: None, policy=ReadyPolicy()
    )
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
    timeout = patient(timeout)
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


def calls_in_flight(ctx: Context) -> int:
    with session_scope(ctx.database_url) as session:
        return session.scalar(select(func.count()).select_from(Attempt).where(Attempt.status == "running")) or 0


def crashes(ctx: Context) -> dict[str, int]:
    """Per worker log, how many times Celery gave up ("Unrecoverable error": the worker process exits)."""
    logs = sorted(ctx.settings.log_dir.glob("worker-*.log"))
    return {log.name: log.read_text(errors="replace").count("Unrecoverable error") for log in logs}


def blip(settings: Settings, restarted: list[subprocess.Popen[bytes]]) -> None:
    """kill -9 of the broker, a few seconds away, and a restart on the same data directory."""
    os.kill(int(broker.broker_paths(settings).pidfile.read_text()), signal.SIGKILL)
    wait_for(lambda: not port_open("127.0.0.1", settings.broker_port), 30, "the broker gone")
    time.sleep(3)  # workers notice and start reconnecting
    restarted.append(broker.start_broker(settings, timeout_s=60))


def test_every_worker_survives_a_broker_kill_and_no_task_is_lost(fleet: Fleet) -> None:
    ctx, started, restarted = fleet
    workers = [s for s in started if s.name.startswith("worker-")]
    everything: list[str] = []
    for round_ in range(3):  # each time with provider calls in flight: their workers hold unacked messages
        everything += [chore(ctx, n) for n in range(round_ * 10, round_ * 10 + 6)]
        wait_for(lambda: calls_in_flight(ctx) >= 3, 180, "provider calls in flight before the kill")
        blip(ctx.settings, restarted)

    everything += [chore(ctx, n) for n in range(90, 93)]  # sent after the last restart: consumed again
    wait_for(
        lambda: set(statuses(ctx, everything).values()) <= set(TERMINAL_STATUSES),
        420,
        f"every task terminal: {statuses(ctx, everything)}",
    )
    assert crashes(ctx) == {f"worker-{g.name}.log": 0 for g in ctx.fleet.groups}
    sender_ran = f"Task {celeryconfig.SEND_OUTBOX_TASK}["  # beat sends the outbox's sender to the first group
    log = ctx.settings.log_dir / f"worker-{ctx.fleet.groups[0].name}.log"
    wait_for(lambda: log.read_text(errors="replace").count(sender_ran) >= 2, 60, "the periodic sender ran")
    assert all(w.process.poll() is None for w in workers), [(w.name, w.process.poll()) for w in workers]
    assert set(statuses(ctx, everything).values()) == {"succeeded"}, statuses(ctx, everything)


WORKER = ["-m", "celery", "-A", "blip_app", "worker", "-P", "threads", "-c", "3", "--without-mingle",
          "--without-gossip", "--loglevel", "INFO"]  # fmt: skip


def blip_workers(
    processes: Processes, settings: Settings, fleet: Path, results: str, logs: dict[str, Path]
) -> list[subprocess.Popen[bytes]]:
    """One real worker of tests/blip_app.py per queue, each writing its log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(
        SWITCHYARD_HOME=str(settings.home),
        SWITCHYARD_BROKER_URL=broker.local_url(settings),
        SWITCHYARD_FLEET_FILE=str(fleet),
        BLIP_RESULTS=results,
        PYTHONPATH=f"{REPO / 'tests'}:{REPO}",
    )
    workers = []
    for queue, log in logs.items():
        with log.open("wb") as out:  # the child keeps its own descriptor
            argv = [sys.executable, *WORKER, "-Q", queue, "-n", f"{queue}@%h"]
            workers.append(processes.spawn(argv, cwd=REPO / "tests", env=env, stdout=out, stderr=subprocess.STDOUT))
    return workers


def test_workers_with_tasks_in_flight_survive_repeated_broker_kills(tmp_path: Path, processes: Processes) -> None:
    """The crash the fix is for: one worker per queue, each with tasks in flight (acks_late) when the broker
    is killed; without tasks/redis_transport.py some of them exit with AttributeError 'hostname'. Tasks sent
    after the last restart are consumed by every worker, and every task sent before runs (unacknowledged
    messages come back after the visibility timeout, shortened here)."""
    settings = Settings(home=tmp_path / "home", broker_port=free_port())
    restarted = [broker.start_broker(settings, timeout_s=60)]
    short = {
        "task_time_limit_s = 900\nvisibility_timeout_s = 3600": "task_time_limit_s = 30\nvisibility_timeout_s = 120"
    }
    fleet = fleet_file(tmp_path, **short)
    ctx = build_context(Settings(home=settings.home, broker_url=broker.local_url(settings), fleet_file=fleet))
    logs = {g.queue: tmp_path / f"{g.queue}.log" for g in ctx.fleet.groups}
    done = redis.Redis.from_url(results := flushed_redis(12))
    workers = blip_workers(processes, settings, fleet, results, logs)
    client = Celery("blip-client")
    client.conf.update({k: v for k, v in celeryconfig.build(ctx.settings, ctx.fleet).items() if k != "beat_schedule"})

    def ran(tags: list[str]) -> bool:
        return {t.encode() for t in tags} <= done.smembers("done")

    try:
        wait_for(lambda: all(b"ready." in log.read_bytes() for log in logs.values()), 240, "workers ready")
        sent: list[str] = []
        for round_ in range(4):
            for queue in logs:
                for i in range(4):
                    sent.append(tag := f"r{round_}-{queue}-{i}")
                    client.send_task("blip.work", args=[1.5, tag], queue=queue)
            time.sleep(1.0)  # the first tasks of each worker are running, the others prefetched
            blip(settings, restarted)
            time.sleep(10)
        after = [f"after-{queue}" for queue in logs]
        for queue, tag in zip(logs, after, strict=True):
            client.send_task("blip.work", args=[0.1, tag], queue=queue)
        wait_for(lambda: ran(after), 180, "every worker consumes again")
        crashed = {q: log.read_text(errors="replace").count("Unrecoverable error") for q, log in logs.items()}
        assert crashed == dict.fromkeys(logs, 0)
        assert [w.poll() for w in workers] == [None] * len(workers)
        wait_for(lambda: ran(sent), 300, "every task sent before the kills ran")
    finally:
        done.close()
        for proc in restarted:
            if proc.poll() is None:
                broker.shutdown(settings, proc)
