"""End-to-end tasks/s of Switchyard against a bare Celery app doing the same job the naive way (issue 13).

    python bench/throughput.py [--database sqlite|postgresql] [--tasks 200] [--rounds 3] [--concurrency 3]

In one run, on one broker (a private ``redis-server`` this script starts), one provider simulator (its own
process, answering at once) and one database (a fresh SQLite file, or a fresh PostgreSQL database dropped
at the end):

- **bare**: ``bench/bare_app.py``, a hand-written Celery app whose task makes the same SDK call
  (``anthropic`` ``messages.create``, the review's system prompt and prompt) to the same simulator and
  inserts one result row;
- **switchyard**: ``pr_review`` tasks submitted as ``switchyard submit`` does, run by Switchyard's own
  worker (``celery -A tasks.app worker``): lease, claim, route (budgets, breaker, hold), the call, the
  answer stored and settled, the verdict, the result row and the terminal status.

Both run as real ``celery worker`` processes with the same pool (``-P threads``) and concurrency, taking
turns (``--rounds``, bare then switchyard each round), so that the machine's changing load hits both alike;
the ratio printed is the median of the rounds' ratios. The tasks of each side are all queued before its
worker starts; its rate is tasks / (last finish - first start), from the rows' own timestamps, so worker
start-up is not counted. The Switchyard worker counts its SQL
transactions (``SWITCHYARD_TXN_COUNT_FILE``, :func:`store.db.count_transactions`): all, those that wrote,
and those that took SQLite's write lock, per attempt. ``lost`` is submitted - finished. Targets: ratio
>= 0.5 on SQLite, >= 0.7 on PostgreSQL, <= 4 writing transactions per attempt, nothing lost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, select  # noqa: E402 -- after the path setup

from bench.bare_app import QUEUE, app, metadata, results  # noqa: E402
from cli.envs import init_environments  # noqa: E402
from environments.sample import make_sample_repo  # noqa: E402
from store.db import dispose_all, session_scope  # noqa: E402
from store.migrate import upgrade  # noqa: E402
from store.models import TERMINAL_STATUSES, Attempt, Environment, Task  # noqa: E402
from switchyard.settings import Settings  # noqa: E402
from tasks.context import Context, build_context  # noqa: E402
from tasks.kinds import HANDLERS  # noqa: E402
from tasks.kinds.base import TaskInfo  # noqa: E402
from tasks.schemas import SubmitRequest  # noqa: E402
from tasks.submit import submit  # noqa: E402

KIND = "pr_review"
STALL_S = 120.0  # no task finished for this long: the side is stopped and what is missing counted as lost
KEYS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL", "OLLAMA_HOST")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"throughput: {what} did not come up within {seconds:.0f}s")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own process group, stopped (TERM, then KILL) by its pid when the block ends."""
    with log.open("wb") as out:
        child = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield child
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


@contextmanager
def database(kind: str, home: Path, admin_url: str, prefix: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{home / 'bench.db'}"
        return
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}"
    finally:
        dispose_all()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def side_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KEYS and not k.startswith("SWITCHYARD_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def celery(app: str, queue: str, concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queue, "-P", "threads", "-c", str(concurrency),
        "--without-mingle", "--without-gossip", "--loglevel", "WARNING", "-n", f"{queue}-bench@%h",
    ]  # fmt: skip


def watch(done: Callable[[], int], total: int, worker: subprocess.Popen[bytes]) -> int:
    """Wait until ``total`` are done, the worker died, or nothing finished for :data:`STALL_S`; how many."""
    last, last_at = -1, time.monotonic()
    while True:
        count = done()
        if count >= total:
            return count
        if count != last:
            last, last_at = count, time.monotonic()
        if time.monotonic() - last_at > STALL_S or worker.poll() is not None:
            return count
        time.sleep(0.25)


def rate(count: int, first: Any, last: Any) -> float:
    if not count or first is None or last is None:
        return 0.0
    return count / max((last - first).total_seconds(), 1e-6)


def run_bare(ctx: Context, url: str, services: tuple[str, str], args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    broker, sim = services
    engine = create_engine(url)
    metadata.create_all(engine)
    app.conf.broker_url = broker
    system, prompt, model, max_tokens = sample_call(ctx)
    ids = [str(uuid.uuid4()) for _ in range(args.tasks)]
    for task_id in ids:
        app.send_task("bench.bare.review", args=[task_id, model, system, prompt, max_tokens], queue=QUEUE)
    env = side_env({"BENCH_BROKER_URL": broker, "BENCH_DATABASE_URL": url, "BENCH_SIMULATOR_URL": sim})
    mine = results.c.task_id.in_(ids)

    def done() -> int:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(results).where(mine)) or 0)

    with process(celery("bench.bare_app", QUEUE, args.concurrency), env, tmp / "bare.log") as worker:
        finished = watch(done, args.tasks, worker)
    with engine.connect() as conn:
        span = select(func.min(results.c.started_at), func.max(results.c.finished_at)).where(mine)
        first, last = conn.execute(span).one()
    engine.dispose()
    return {"finished": finished, "tasks_per_s": rate(finished, first, last)}


def sample_call(ctx: Context) -> tuple[str, str, str, int]:
    """The review's system prompt and prompt, as Switchyard builds them (for a task never submitted), with its
    model and output cap."""
    request = SubmitRequest.model_validate({"kind": KIND, "environment": "dev1", "branch": "feature/sample-1"})
    with session_scope(ctx.database_url) as session:
        env = session.get(Environment, "dev1")
        assert env is not None, "dev1 was initialised"
        workspace = Path(env.path).parent
    group = ctx.fleet.group_for_kind(KIND).name
    info = TaskInfo(str(uuid.uuid4()), KIND, group, "dev1", ctx.fleet.environments.stages[0], request, workspace)
    prompt = HANDLERS[KIND].prompt(ctx, info)
    model = ctx.fleet.providers["claude"].default_model
    return prompt.system, prompt.prompt, model, ctx.fleet.kind(KIND).max_output_tokens


def run_switchyard(ctx: Context, env: dict[str, str], args: argparse.Namespace, tmp: Path, turn: int) -> dict[str, Any]:
    branches = [f"feature/sample-{i}" for i in (1, 2, 3)]
    ids = [
        submit({"kind": KIND, "environment": "dev1", "branch": branches[i % 3]}, context=ctx) for i in range(args.tasks)
    ]
    counts = tmp / f"txn-{turn}"
    env = {**env, "SWITCHYARD_TXN_COUNT_FILE": str(counts)}
    queue = ctx.fleet.group_for_kind(KIND).queue

    def done() -> int:
        with session_scope(ctx.database_url) as session:
            ended = select(func.count()).where(Task.id.in_(ids), Task.status.in_(TERMINAL_STATUSES))
            return int(session.scalar(ended) or 0)

    with process(celery("tasks.app", queue, args.concurrency), env, tmp / "switchyard.log") as worker:
        finished = watch(done, args.tasks, worker)
    with session_scope(ctx.database_url) as session:
        mine = Task.id.in_(ids)
        first, last = session.execute(select(func.min(Task.started_at), func.max(Task.finished_at)).where(mine)).one()
        succeeded = int(session.scalar(select(func.count()).where(mine, Task.status == "succeeded")) or 0)
        attempts = int(session.scalar(select(func.count()).select_from(Attempt).where(Attempt.task_id.in_(ids))) or 0)
    totals: dict[str, Any] = {"transactions": 0, "writing": 0, "locked": 0, "first_writes": {}}
    for path in tmp.glob(f"txn-{turn}.*"):
        figures = json.loads(path.read_text())
        for key in ("transactions", "writing", "locked"):
            totals[key] += figures[key]
        for what, n in figures["first_writes"].items():
            totals["first_writes"][what] = totals["first_writes"].get(what, 0) + n
    per = max(attempts, 1)
    return {
        "finished": finished,
        "succeeded": succeeded,
        "attempts": attempts,
        "tasks_per_s": rate(finished, first, last),
        "per_attempt": {key: totals[key] / per for key in ("transactions", "writing", "locked")},
        "first_writes": {what: round(n / per, 2) for what, n in sorted(totals["first_writes"].items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--tasks", type=int, default=200, help="tasks per side (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="turns of bare, then switchyard (default 3)")
    parser.add_argument("--concurrency", type=int, default=3, help="worker threads per side (pr_review's sessions)")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--postgres-prefix", default="switchyard_bench_", help="start of the database's name")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs) and print it")
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        raise SystemExit("throughput: needs redis-server on PATH for a private broker")
    tmp = Path(tempfile.mkdtemp(prefix="switchyard-throughput-"))
    redis_port, sim_port = free_port(), free_port()
    broker = f"redis://127.0.0.1:{redis_port}/0"
    redis_args = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    try:
        with (
            process(redis_args, dict(os.environ), tmp / "redis.log"),
            process([sys.executable, "-m", "simulator", "--port", str(sim_port)], side_env({}), tmp / "sim.log"),
            database(args.database, tmp, args.postgres_url, args.postgres_prefix) as url,
        ):
            wait_for("redis-server", lambda: port_open(redis_port))
            wait_for("the simulator", lambda: port_open(sim_port))
            sim = f"http://127.0.0.1:{sim_port}"
            for provider in ("claude", "codex", "ollama"):  # answering at once
                httpx.post(f"{sim}/_sim/providers/{provider}", json={"latency_ms": 0}).raise_for_status()
            env = side_env(
                {
                    "SWITCHYARD_HOME": str(tmp / "home"),
                    "SWITCHYARD_DATABASE_URL": url,
                    "SWITCHYARD_BROKER_URL": broker,
                    "SWITCHYARD_SIMULATE": "true",
                    "SWITCHYARD_SIMULATOR_URL": sim,
                    "SWITCHYARD_FLEET_FILE": str(ROOT / "switchyard.toml"),
                    "SWITCHYARD_WORKSPACE": str(tmp / "workspace"),
                    "SWITCHYARD_LOG_LEVEL": "WARNING",
                }
            )
            for key in KEYS:
                os.environ.pop(key, None)
            os.environ.update({k: v for k, v in env.items() if k.startswith("SWITCHYARD_")})
            upgrade(url)
            ctx = build_context(Settings())
            sample = make_sample_repo(tmp / "sample", feature_branches=3)
            init_environments(ctx, str(sample), tmp / "workspace", ["dev1"])
            rounds = []
            for turn in range(args.rounds):  # taking turns, so that the machine's load changes hit both alike
                rounds.append((run_bare(ctx, url, (broker, sim), args, tmp), run_switchyard(ctx, env, args, tmp, turn)))
    finally:
        if args.keep:
            print(f"working directory kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(args, rounds)
    return 0


def report(args: argparse.Namespace, rounds: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    target = 0.5 if args.database == "sqlite" else 0.7
    print(
        f"throughput on {args.database}: {args.rounds} rounds of {args.tasks} tasks per side, "
        f"-P threads -c {args.concurrency}"
    )
    ratios = []
    for turn, (bare, yard) in enumerate(rounds, 1):
        ratio = yard["tasks_per_s"] / bare["tasks_per_s"] if bare["tasks_per_s"] else 0.0
        ratios.append(ratio)
        print(
            f"  round {turn}: bare celery {bare['tasks_per_s']:6.1f} tasks/s (lost {args.tasks - bare['finished']}), "
            f"switchyard {yard['tasks_per_s']:6.1f} tasks/s (lost {args.tasks - yard['finished']}, "
            f"succeeded {yard['succeeded']}, attempts {yard['attempts']}): {ratio:.2f}x"
        )
    bare_rate = statistics.median(bare["tasks_per_s"] for bare, _ in rounds)
    yard_rate = statistics.median(yard["tasks_per_s"] for _, yard in rounds)
    lost = sum(2 * args.tasks - bare["finished"] - yard["finished"] for bare, yard in rounds)
    print(f"  median: bare celery {bare_rate:.1f} tasks/s, switchyard {yard_rate:.1f} tasks/s")
    print(f"  ratio (median of rounds) {statistics.median(ratios):.2f}x  (target >= {target}x); lost {lost}")
    attempts = sum(yard["attempts"] for _, yard in rounds) or 1
    per = {
        key: sum(yard["per_attempt"][key] * yard["attempts"] for _, yard in rounds) / attempts
        for key in ("transactions", "writing", "locked")
    }
    print(
        f"  SQL transactions per attempt: {per['transactions']:.1f} in all, {per['writing']:.1f} writing "
        f"(target <= 4), {per['locked']:.1f} taking SQLite's write lock; what each writing one wrote first:"
    )
    firsts: dict[str, float] = {}
    for _, yard in rounds:
        for what, n in yard["first_writes"].items():
            firsts[what] = firsts.get(what, 0.0) + n * yard["attempts"] / attempts
    for what, n in sorted(firsts.items()):
        print(f"    {n:5.2f}  {what}")


if __name__ == "__main__":
    sys.exit(main())
