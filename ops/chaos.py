"""``python -m ops.chaos`` (``make chaos``): a real fleet through every fault, and a table of what each cost.

    python -m ops.chaos [--database-url URL] [--tasks N] [--only FAULT]... [--keep]

Starts a fleet of its own (the launcher's embedded broker, simulator, one ``celery worker`` per group and
beat; SQLite in a temporary home unless ``--database-url`` names a database), runs each fault of
:data:`ops.faults.FAULTS` on a share of the ``N`` tasks, then a second fleet on a private ``redis-server``
for the Redis restart. Prints one row per fault: tasks, lost, stuck, duplicate charges, unrecorded
charges, time to recover (definitions: :mod:`ops.verdict`), plus failed tasks, refused submissions and
broken environment branches. Exit 0 when every row is all zeros and recovered in under 90 s, 1 otherwise,
2 on bad arguments. Everything it started is stopped at the end, on Ctrl-C and on errors too.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from ops.faults import FAULTS, Fault, FaultKit, PostgresControl
from ops.fleet import chaos_settings, free_port, start_fleet
from ops.pgcluster import PrivatePostgres
from ops.phase import run_phase
from ops.redis_server import PrivateRedis
from ops.verdict import Verdict
from switchyard.private import masked_url
from switchyard.settings import Settings

DEFAULT_TASKS = 300
MIN_TASKS_PER_FAULT = 4
READY_TIMEOUT_S = 300.0
COLUMNS = ("fault", "tasks", "lost", "stuck", "dup charges", "unrecorded", "recover s", "failed", "refused", "ok")


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def shares(faults: Sequence[Fault], total: int) -> dict[str, int]:
    """Tasks per fault, by weight (a skipped fault still takes its share: the split does not depend on hooks)."""
    weight = sum(f.weight for f in faults) or 1
    return {f.name: max(MIN_TASKS_PER_FAULT, round(total * f.weight / weight)) for f in faults}


def run_suite(
    faults: Sequence[Fault], *, home: Path, tasks: int, database_url: str | None, postgres: PostgresControl | None
) -> list[Verdict]:
    """Every fault in order: those on the embedded broker on one fleet, the Redis restart on a second."""
    counts = shares(faults, tasks)
    verdicts: list[Verdict] = []
    embedded = [f for f in faults if f.broker == "embedded"]
    if embedded:
        settings = chaos_settings(home / "embedded", database_url=database_url, broker_url=None)
        verdicts += on_fleet(embedded, counts, settings=settings, redis=None, postgres=postgres)
    external = [f for f in faults if f.broker == "redis"]
    if external:
        redis = PrivateRedis(free_port(), home / "redis-data").start()
        try:
            settings = chaos_settings(home / "redis", database_url=database_url, broker_url=redis.url)
            verdicts += on_fleet(external, counts, settings=settings, redis=redis, postgres=postgres)
        finally:
            redis.stop()
    return verdicts


def on_fleet(
    faults: Sequence[Fault],
    counts: dict[str, int],
    *,
    settings: Settings,
    redis: PrivateRedis | None,
    postgres: PostgresControl | None,
) -> list[Verdict]:
    log(f"starting a fleet in {settings.data_dir} (broker {masked_url(settings.effective_broker_url)})")
    fleet = start_fleet(settings, log=lambda m: log(f"  {m}"), ready_timeout_s=READY_TIMEOUT_S)
    kit = FaultKit(fleet=fleet, log=log, redis=redis, postgres=postgres)
    verdicts = []
    try:
        for fault in faults:
            log(f"fault {fault.name}: {counts[fault.name]} tasks")
            row = run_phase(kit, fault, counts[fault.name])
            log(f"fault {fault.name}: {render_row(row)}")
            verdicts.append(row)
    finally:
        log("stopping the fleet")
        fleet.stop(lambda m: log(f"  {m}"))
    return verdicts


def render_row(v: Verdict) -> str:
    return "  ".join(f"{c}={x}" for c, x in zip(COLUMNS, cells(v), strict=True))


def cells(v: Verdict) -> list[str]:
    if v.skipped:
        return [v.fault, "-", "-", "-", "-", "-", "-", "-", "-", f"skipped: {v.skipped}"]
    recover = f"{v.recover_s:.1f}" if v.recover_s is not None else "never"
    mark = "ok" if v.ok else "FAIL"
    if not v.failures_allowed and v.failed:
        mark += " (a healthy next rung, yet tasks failed)"
    if v.crashed:
        mark += f" exited: {', '.join(v.crashed)}"
    if v.broken_branches:
        mark += f" broken: {', '.join(v.broken_branches)}"
    if v.error:
        mark += f" ({v.error})"
    numbers = (v.tasks, v.lost, v.stuck, v.duplicate_charges, v.unrecorded_charges)
    return [v.fault, *map(str, numbers), recover, str(v.failed), str(v.refused), mark]


def table(verdicts: Sequence[Verdict]) -> str:
    rows = [list(COLUMNS), *(cells(v) for v in verdicts)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]) for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ops.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="e.g. postgresql+psycopg://postgres@127.0.0.1/chaos (default: SQLite)")
    parser.add_argument("--tasks", type=int, default=DEFAULT_TASKS, help=f"tasks in all (default {DEFAULT_TASKS})")
    names = [f.name for f in FAULTS]
    parser.add_argument("--only", action="append", choices=names, metavar="FAULT", help=f"one of {names}")
    parser.add_argument(
        "--private-postgres",
        action="store_true",
        help="run on a PostgreSQL cluster of the suite's own (initdb + pg_ctl), which the postgres_stop fault stops",
    )
    parser.add_argument("--keep", action="store_true", help="keep the suite's home (logs, database) afterwards")
    args = parser.parse_args(argv)
    if args.tasks < 1:
        parser.error("--tasks must be at least 1")
    if args.private_postgres and args.database_url:
        parser.error("--private-postgres brings its own database: leave out --database-url")
    return args


def main(argv: Sequence[str] | None = None, *, postgres: PostgresControl | None = None) -> int:
    args = parse(argv)
    faults = [f for f in FAULTS if not args.only or f.name in args.only]
    home = Path(tempfile.mkdtemp(prefix="switchyard-chaos-"))
    previous = signal.signal(signal.SIGTERM, _exit_on_term)
    started = time.monotonic()
    cluster = PrivatePostgres() if args.private_postgres else None  # under /tmp: the postgres user must reach it
    try:
        database_url = args.database_url
        if cluster is not None:
            cluster.start()
            database_url, postgres = cluster.database("chaos"), cluster
        verdicts = run_suite(faults, home=home, tasks=args.tasks, database_url=database_url, postgres=postgres)
    finally:
        if cluster is not None:
            cluster.close()
        signal.signal(signal.SIGTERM, previous)
        if args.keep:
            log(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    print(table(verdicts))
    print(f"chaos: {len(verdicts)} faults in {time.monotonic() - started:.0f} s")
    return 0 if all(v.ok for v in verdicts) else 1


def _exit_on_term(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(143)  # unwinds through every `finally`, which stops what was started


if __name__ == "__main__":
    sys.exit(main())
