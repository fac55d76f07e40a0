"""How long a cost report takes over 1,000,000 attempts on PostgreSQL (issue 12's target: under 2 s).

    python -m bench.reports [--attempts 1000000] [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
                            [--keep]

Creates a database of its own, migrates it, and fills it in SQL with ``generate_series`` (a task per four
attempts; every attempt with its ledger row; Claude, Codex and Ollama; five environments, three stages, five
groups; thirty days), then runs ``ANALYZE`` and times :func:`reports.report.cost_report` (the whole report: the
roll-up by the keys, the totals, the ledger check, the baseline, the budgets, the peak hour, the top tasks and
the chart series) by each of :data:`GROUPINGS`, three times each, printing the best and the worst. The fill
runs with triggers off (``session_replication_role = replica``) and rebuilds ``report_hours`` after it, timed:
the backfill migration 0014 does on an existing database.
The database is dropped at the end unless ``--keep``. Run it as a module from the checkout (``-m``), so that
``reports`` is the package, not this file.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import text

from reports.report import cost_report
from store.db import dispose_all, get_engine, session_scope
from store.migrate import upgrade
from store.report_hours import rebuild
from switchyard.fleet import load_fleet
from switchyard.settings import load_settings

TARGET_S = 2.0
GROUPINGS = ("group", "env,provider,day", "provider,model", "kind,hour", "env,stage,group,kind,provider,model,day")

FILL = """
INSERT INTO tasks (id, kind, "group", environment, stage, status, title, payload, provider, model, transport,
                   cost_micros, attempts, created_at)
SELECT 't' || lpad(i::text, 10, '0'),
       (ARRAY['plan','dev_task','pr_review','pr_impl','pr_integ'])[1 + i %% 5],
       (ARRAY['high_level','dev_workers','pr_review','pr_impl','pr_integ'])[1 + i %% 5],
       'dev' || (1 + i %% 5 + (i / 5) %% 5) %% 5 + 1, (ARRAY['dev','qa','staging'])[1 + i %% 3],
       CASE WHEN i %% 10 = 0 THEN 'failed' ELSE 'succeeded' END, 'bench task ' || i, '{}'::json,
       (ARRAY['claude','ollama','ollama','codex','ollama'])[1 + i %% 5], 'm', 'api', 0, 4,
       %(start)s::timestamptz + (i * interval '1 second') * (2592000.0 / %(tasks)s)
FROM generate_series(0, %(tasks)s - 1) AS i;

INSERT INTO attempts (task_id, attempt, provider, model, transport, status, input_tokens, cached_input_tokens,
                      cache_write_tokens, cache_write_1h_tokens, output_tokens, reasoning_tokens, compute_seconds,
                      cost_micros, latency_ms, started_at)
SELECT t.id, a, p.provider, p.model, 'api',
       CASE WHEN a = 4 AND t.status = 'succeeded' THEN 'succeeded' ELSE 'failed' END,
       1000 + a * 37, CASE WHEN p.provider = 'ollama' THEN 0 ELSE 400 END,
       CASE WHEN p.provider = 'claude' THEN 120 ELSE 0 END, CASE WHEN p.provider = 'claude' THEN 30 ELSE 0 END,
       300 + a * 11, CASE WHEN p.provider = 'codex' THEN 90 ELSE 0 END,
       CASE WHEN p.provider = 'ollama' THEN 1.5 ELSE 0 END, p.cost, 40, t.created_at + a * interval '1 second'
FROM tasks t CROSS JOIN generate_series(1, 4) AS a
CROSS JOIN LATERAL (SELECT (ARRAY['claude','codex','ollama','claude'])[a] AS provider,
                           (ARRAY['claude-sonnet-5','gpt-5.3-codex','qwen2.5-coder:7b','claude-sonnet-5'])[a] AS model,
                           (ARRAY[5210, 6000, 0, 5330])[a] AS cost) AS p;

INSERT INTO spend (task_id, attempt, provider, model, "group", environment, stage, state, held_micros,
                   charged_micros, price_version, created_at, settled_at)
SELECT a.task_id, a.attempt, a.provider, a.model, t."group", t.environment, t.stage, 'settled', 20000,
       a.cost_micros, a.provider || '/' || a.model || '@2026-01-01', a.started_at, a.started_at
FROM attempts a JOIN tasks t ON t.id = a.task_id;
"""


def fill(url: str, attempts: int) -> float:
    started = time.perf_counter()
    tasks = attempts // 4
    start = datetime.now(UTC) - timedelta(days=30)  # the thirty days up to now
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # a bulk load: the roll-up is rebuilt after it
        for statement in FILL.split(";\n"):
            if statement.strip():
                conn.execute(statement, {"tasks": tasks, "start": start})
    filled = time.perf_counter() - started
    with get_engine(url).begin() as conn:
        started = time.perf_counter()
        rebuild(conn)  # what migration 0014 does to the rows already there
        took = time.perf_counter() - started
        print(f"  report_hours and report_tasks rebuilt from the raw rows (migration 0014's backfill) in {took:.1f} s")
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("ANALYZE")
    return filled


PLAIN_SUM = text("SELECT sum(charged_micros) FROM spend WHERE state = 'settled' AND created_at >= :since")


def plain_sum(url: str) -> float:
    """How long the plain ``SELECT sum(...)`` over the same ledger rows takes, measured now: the machine's yardstick."""
    with session_scope(url) as session:
        started = time.perf_counter()
        session.execute(PLAIN_SUM, {"since": datetime.now(UTC) - timedelta(days=30)}).scalar_one()
        return time.perf_counter() - started


def time_report(url: str, by: str, plains: list[float]) -> list[float]:
    fleet = load_fleet(load_settings().fleet_file)
    times = []
    for _ in range(3):
        plain = plain_sum(url)
        started = time.perf_counter()
        with session_scope(url) as session:
            report = cost_report(session, fleet, now=datetime.now(UTC), since="30d", by=by)
        times.append(time.perf_counter() - started)
        plains.append(plain)
    print(
        f"  --by {by}: {len(report['rows'])} rows, total ${report['total']['cost_usd']}, "
        f"{report['total']['attempts']} attempts, reconciled with the ledger: {report['ledger']['reconciled']}"
    )
    return times


def run(url: str) -> None:
    """Each report three times, each time after the plain sum, and the ratio: a shared machine's load moves both."""
    for by in GROUPINGS:
        plains: list[float] = []
        times = time_report(url, by, plains)
        verdict = "ok" if min(times) < TARGET_S else "OVER TARGET"
        print(f"  report: best {min(times):.2f} s, worst {max(times):.2f} s (target < {TARGET_S:.0f} s): {verdict}")
        ratios = [t / p for t, p in zip(times, plains, strict=True)]
        print(
            f"  plain SELECT sum(charged_micros) over the same rows: best {min(plains):.2f} s; "
            f"report / plain sum: best {min(ratios):.1f}x, worst {max(ratios):.1f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--database-url", help="time the report on this database, filled by an earlier --keep run")
    args = parser.parse_args()
    if args.database_url:
        run(args.database_url)
        return
    name = f"switchyard_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = args.admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    try:
        upgrade(url)
        print(f"filled {args.attempts:,} attempts (and their ledger rows) in {fill(url, args.attempts):.1f} s")
        run(url)
    finally:
        dispose_all()
        if args.keep:
            print(f"kept {url}")
        else:
            with psycopg.connect(args.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
