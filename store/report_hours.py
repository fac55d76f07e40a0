"""The hourly roll-up behind the cost report (``report_hours``), kept by triggers, rebuilt and checked here.

A *fact* is one ledger row (``spend``) with its attempt's usage and its task's keys, timed at the hold
(``spend.created_at``) and costing what was settled (a held or released row costs $0); an attempt with no
ledger row is a fact too, at its start, at $0. Each fact adds to one row of ``report_hours``: its UTC hour,
the task's env, stage, group and kind, the fact's provider and model. Every column is a plain sum:

    facts, attempts        1 per fact; 1 when the fact has an attempt row
    tasks                  1 for the fact of a task's first attempt (attempt number 1): a task counts once, in
                           the hour and row of its first attempt
    succeeded              1 when the attempt succeeded
    *_tokens, compute_ms   the attempt's usage (Ollama compute in integer milliseconds, so sums stay exact)
    cost_micros            the settled charge; unknown_cost_*: settled at the hold, real cost unknown
    zero_cost_attempts     an attempt with tokens and a $0 cost (the report flags those of paid providers)

Why triggers, not a call in the ledger: seven places write a summed figure (the hold, its renewal, the settle,
the late settle and its correction, the release, the attempt's start, answer and verdict) in four modules and
several transactions. A row trigger on ``spend`` and on ``attempts`` runs in the statement's own transaction,
so the roll-up moves with every one of them and with any writer added later, and is never half-applied.

Each trigger applies a difference for the one (task, attempt) its row belongs to: before an update or delete
it subtracts that key's fact as the tables hold it, after it adds the fact again; an insert adds the new fact
and subtracts the one the key had without the new row (an attempt that had no ledger row yet). An
``INSERT ... ON CONFLICT DO NOTHING`` that inserts nothing fires no AFTER INSERT trigger, so nothing moves.
What the triggers assume: a task's env, stage, group and kind never change, rows never change their (task,
attempt), and rows are removed with DELETE (TRUNCATE skips row triggers: :func:`rebuild` after one).

:func:`rebuild` fills the table from the raw rows (migration 0014, a bulk load); :func:`differences`
recomputes it from the raw rows and lists what does not match (``switchyard db check-rollup``, the tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, DateTime, TextClause, bindparam, text

from store.costs import UNKNOWN_COST

TABLE = "report_hours"
KEYS = ("hour", "env", "stage", "group", "kind", "provider", "model")
TOKENS = (  # roll-up column <- attempts column
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_tokens", "cached_input_tokens"),
    ("cache_write_5m_tokens", "cache_write_tokens"),
    ("cache_write_1h_tokens", "cache_write_1h_tokens"),
    ("reasoning_tokens", "reasoning_tokens"),
)
SUMS = (
    "facts",
    "attempts",
    "tasks",
    "succeeded",
    *(name for name, _ in TOKENS),
    "compute_ms",
    "cost_micros",
    "unknown_cost_attempts",
    "unknown_cost_micros",
    "zero_cost_attempts",
)
# the columns whose change moves a fact (an update of the others fires nothing)
WATCHED = {
    "spend": ("provider", "model", "state", "charged_micros", "price_version", "created_at"),
    "attempts": ("provider", "model", "status", *(c for _, c in TOKENS), "compute_seconds", "started_at"),
}
NEVER = " AND 1 = 0"


def quoted(name: str) -> str:
    return '"group"' if name == "group" else name


def hour_of(column: str, dialect: str) -> str:
    """The UTC hour a timestamp column falls in, as the column type stores it (SQLite keeps UTC as text)."""
    if dialect == "postgresql":
        return f"date_trunc('hour', {column} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    return f"substr({column}, 1, 13) || ':00:00.000000'"


def _usage(cost: str, *, ledgered: bool) -> tuple[list[str], str]:
    """The attempt's columns of a fact (succeeded, tokens, compute, cost) and its $0-with-tokens flag."""
    has_attempt = "a.id IS NOT NULL" if ledgered else "1 = 1"
    tokens = " + ".join(f"COALESCE(a.{column}, 0)" for _, column in TOKENS)
    columns = [
        "CASE WHEN a.status = 'succeeded' THEN 1 ELSE 0 END",
        *(f"COALESCE(a.{column}, 0)" for _, column in TOKENS),
        "CAST(ROUND(COALESCE(a.compute_seconds, 0) * 1000) AS BIGINT)",
        cost,
    ]
    return columns, f"CASE WHEN {has_attempt} AND {tokens} > 0 AND {cost} = 0 THEN 1 ELSE 0 END"


def facts_sql(dialect: str, *, spend_where: str, attempt_where: str, ignore: str | None = None) -> str:
    """The facts (one row each, columns :data:`KEYS` then :data:`SUMS`) of the ledger rows matching
    ``spend_where`` and of the attempts with no ledger row matching ``attempt_where``; ``ignore`` names a table
    whose rows are left out (what the key's fact was before a row of it was inserted)."""
    no_spend = NEVER if ignore == "spend" else ""
    no_attempt = NEVER if ignore == "attempts" else ""
    cost = "CASE WHEN s.state = 'settled' THEN s.charged_micros ELSE 0 END"
    unknown = f"s.state = 'settled' AND s.price_version = '{UNKNOWN_COST.replace(chr(39), chr(39) * 2)}'"
    usage, zero = _usage(cost, ledgered=True)
    ledgered = [
        *(f"{column} AS {quoted(name)}" for column, name in _key_columns("s", "s.created_at", dialect)),
        "1",
        "CASE WHEN a.id IS NULL THEN 0 ELSE 1 END",
        "CASE WHEN s.attempt = 1 THEN 1 ELSE 0 END",
        *usage,
        f"CASE WHEN {unknown} THEN 1 ELSE 0 END",
        f"CASE WHEN {unknown} THEN s.charged_micros ELSE 0 END",
        zero,
    ]
    ledgered[len(KEYS) :] = [f"{column} AS {name}" for column, name in zip(ledgered[len(KEYS) :], SUMS, strict=True)]
    usage, zero = _usage("0", ledgered=False)
    unledgered = [
        *(column for column, _ in _key_columns("a", "a.started_at", dialect)),
        "1",
        "1",
        "CASE WHEN a.attempt = 1 THEN 1 ELSE 0 END",
        *usage,
        "0",
        "0",
        zero,
    ]
    return (
        f"SELECT {', '.join(ledgered)} FROM spend s JOIN tasks t ON t.id = s.task_id "
        f"LEFT JOIN attempts a ON a.task_id = s.task_id AND a.attempt = s.attempt{no_attempt} "
        f"WHERE {spend_where}{no_spend} "
        f"UNION ALL SELECT {', '.join(unledgered)} FROM attempts a JOIN tasks t ON t.id = a.task_id "
        f"WHERE {attempt_where}{no_attempt} AND NOT EXISTS "
        f"(SELECT 1 FROM spend s WHERE s.task_id = a.task_id AND s.attempt = a.attempt{no_spend})"
    )


def _key_columns(row: str, at: str, dialect: str) -> list[tuple[str, str]]:
    task = [("t.environment", "env"), ("t.stage", "stage"), ('t."group"', "group"), ("t.kind", "kind")]
    return [(hour_of(at, dialect), "hour"), *task, (f"{row}.provider", "provider"), (f"{row}.model", "model")]


def grouped_sql(facts: str) -> str:
    """The facts summed per roll-up row."""
    keys = ", ".join(f"f.{quoted(k)}" for k in KEYS)
    sums = ", ".join(f"SUM(f.{name}) AS {name}" for name in SUMS)
    return f"SELECT {keys}, {sums} FROM ({facts}) AS f GROUP BY {keys}"


def _apply(dialect: str, sign: int, row: str, ignore: str | None = None) -> str:
    """Add ``sign`` times the fact of the trigger row's (task, attempt) to its roll-up row."""
    facts = facts_sql(
        dialect,
        spend_where=f"s.task_id = {row}.task_id AND s.attempt = {row}.attempt",
        attempt_where=f"a.task_id = {row}.task_id AND a.attempt = {row}.attempt",
        ignore=ignore,
    )
    columns = ", ".join(quoted(name) for name in (*KEYS, *SUMS))
    values = ", ".join([*(f"f.{quoted(k)}" for k in KEYS), *(f"{sign} * f.{name}" for name in SUMS)])
    adds = ", ".join(f"{name} = {TABLE}.{name} + excluded.{name}" for name in SUMS)
    keys = ", ".join(quoted(k) for k in KEYS)
    # "WHERE true": SQLite would read ON CONFLICT as the join's ON without it
    return (
        f"INSERT INTO {TABLE} ({columns}) SELECT {values} FROM ({facts}) AS f WHERE 1 = 1 "
        f"ON CONFLICT ({keys}) DO UPDATE SET {adds}"
    )


TASKS_TABLE = "report_tasks"


def _charged(row: str) -> str:
    return f"CASE WHEN {row}.state = 'settled' THEN {row}.charged_micros ELSE 0 END"


def _task_delta(row: str, cost: str, rows: int) -> str:
    """Add ``cost`` and ``rows`` to the task's line of ``report_tasks`` (a ledger row of it changed)."""
    return (
        f"INSERT INTO {TASKS_TABLE} (task_id, created_at, cost_micros, attempts) "
        f"SELECT t.id, t.created_at, {cost}, {rows} FROM tasks t WHERE t.id = {row}.task_id "
        f"ON CONFLICT (task_id) DO UPDATE SET cost_micros = {TASKS_TABLE}.cost_micros + excluded.cost_micros, "
        f"attempts = {TASKS_TABLE}.attempts + excluded.attempts"
    )


TASK_DELTAS = {
    "insert": _task_delta("NEW", _charged("NEW"), 1),
    "update": _task_delta("NEW", f"{_charged('NEW')} - {_charged('OLD')}", 0),
    "delete": _task_delta("OLD", f"-({_charged('OLD')})", -1),
}


def create_triggers(conn: Connection) -> None:
    dialect = conn.dialect.name
    for statement in _postgresql() if dialect == "postgresql" else _sqlite():
        conn.execute(text(statement))


def drop_triggers(conn: Connection) -> None:
    for table in WATCHED:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"DROP TRIGGER IF EXISTS report_hours_before ON {table}"))
            conn.execute(text(f"DROP TRIGGER IF EXISTS report_hours_after ON {table}"))
            conn.execute(text(f"DROP FUNCTION IF EXISTS report_hours_after_{table}()"))
        else:
            for suffix in ("bu", "au", "bd", "ad", "ai"):
                conn.execute(text(f"DROP TRIGGER IF EXISTS report_hours_{table}_{suffix}"))
    if conn.dialect.name == "postgresql":
        conn.execute(text("DROP FUNCTION IF EXISTS report_hours_before()"))


def _postgresql() -> list[str]:
    sub = _apply("postgresql", -1, "OLD")
    out = [
        "CREATE FUNCTION report_hours_before() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"{sub}; IF TG_OP = 'DELETE' THEN RETURN OLD; END IF; RETURN NEW; END $$"
    ]
    for table, watched in WATCHED.items():
        ops = {
            "insert": [_apply("postgresql", 1, "NEW"), _apply("postgresql", -1, "NEW", ignore=table)],
            "update": [_apply("postgresql", 1, "NEW")],
            "delete": [_apply("postgresql", 1, "OLD")],
        }
        if table == "spend":
            for op, statements in ops.items():
                statements.append(TASK_DELTAS[op])
        body = {op: " ".join(f"{statement};" for statement in statements) for op, statements in ops.items()}
        out.append(
            f"CREATE FUNCTION report_hours_after_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF TG_OP = 'INSERT' THEN {body['insert']} ELSIF TG_OP = 'UPDATE' THEN {body['update']} "
            f"ELSE {body['delete']} END IF; RETURN NULL; END $$"
        )
        of = ", ".join(watched)
        out.append(
            f"CREATE TRIGGER report_hours_before BEFORE UPDATE OF {of} OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION report_hours_before()"
        )
        out.append(
            f"CREATE TRIGGER report_hours_after AFTER INSERT OR UPDATE OF {of} OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION report_hours_after_{table}()"
        )
    return out


def _sqlite() -> list[str]:
    out = []
    for table, watched in WATCHED.items():
        of = ", ".join(watched)
        bodies = {
            "bu": (f"BEFORE UPDATE OF {of}", [_apply("sqlite", -1, "OLD")]),
            "au": (f"AFTER UPDATE OF {of}", [_apply("sqlite", 1, "NEW")]),
            "bd": ("BEFORE DELETE", [_apply("sqlite", -1, "OLD")]),
            "ad": ("AFTER DELETE", [_apply("sqlite", 1, "OLD")]),
            "ai": ("AFTER INSERT", [_apply("sqlite", 1, "NEW"), _apply("sqlite", -1, "NEW", ignore=table)]),
        }
        if table == "spend":
            for suffix, op in (("ai", "insert"), ("au", "update"), ("ad", "delete")):
                bodies[suffix][1].append(TASK_DELTAS[op])
        for suffix, (when, statements) in bodies.items():
            body = " ".join(f"{statement};" for statement in statements)
            out.append(f"CREATE TRIGGER report_hours_{table}_{suffix} {when} ON {table} FOR EACH ROW BEGIN {body} END")
    return out


def rebuild(conn: Connection) -> None:
    """Empty the roll-up and fill it from the raw rows, in SQL (after a bulk load, a TRUNCATE, or a change of
    what a fact is)."""
    everything = facts_sql(conn.dialect.name, spend_where="1 = 1", attempt_where="1 = 1")
    columns = ", ".join(quoted(name) for name in (*KEYS, *SUMS))
    conn.execute(text(f"DELETE FROM {TABLE}"))
    conn.execute(text(f"INSERT INTO {TABLE} ({columns}) {grouped_sql(everything)}"))
    conn.execute(text(f"DELETE FROM {TASKS_TABLE}"))
    conn.execute(text(f"INSERT INTO {TASKS_TABLE} (task_id, created_at, cost_micros, attempts) {PER_TASK}"))


PER_TASK = (
    f"SELECT t.id, t.created_at, SUM({_charged('s')}), COUNT(*) FROM spend s JOIN tasks t ON t.id = s.task_id "
    "GROUP BY t.id, t.created_at"
)


def period_facts(dialect: str, *, into: str | None = None) -> TextClause:
    """The facts timed in ``[:since, :until)``, summed per roll-up row (columns :data:`KEYS` then :data:`SUMS`):
    what a report reads for the part-hours at a period's ends; ``into`` a table: inserted there."""
    facts = facts_sql(
        dialect,
        spend_where="s.created_at >= :since AND s.created_at < :until",
        attempt_where="a.started_at >= :since AND a.started_at < :until",
    )
    moment = DateTime(timezone=True)
    prefix = "" if into is None else f"INSERT INTO {into} ({', '.join(quoted(n) for n in (*KEYS, *SUMS))}) "
    query = text(prefix + grouped_sql(facts))
    return query.bindparams(bindparam("since", type_=moment), bindparam("until", type_=moment))


def _rows(conn: Connection, query: TextClause, **params: Any) -> dict[tuple[Any, ...], tuple[int, ...]]:
    found = {}
    for row in conn.execute(query, params):
        keys = tuple(row[: len(KEYS)])
        sums = tuple(int(v or 0) for v in row[len(KEYS) :])
        if any(sums):  # a row whose facts all moved elsewhere is all zeros: the same as no row
            found[keys] = sums
    return found


def differences(conn: Connection) -> list[str]:
    """Each roll-up row that differs from the recomputation from raw rows (none when the triggers kept it)."""
    dialect = conn.dialect.name
    columns = ", ".join(quoted(name) for name in (*KEYS, *SUMS))
    kept = _rows(conn, text(f"SELECT {columns} FROM {TABLE}"))
    everything = facts_sql(dialect, spend_where="1 = 1", attempt_where="1 = 1")
    raw = _rows(conn, text(grouped_sql(everything)))
    out = []
    for key in sorted(set(kept) | set(raw), key=str):
        if kept.get(key) != raw.get(key):
            out.append(f"{dict(zip(KEYS, key, strict=True))}: kept {_named(kept.get(key))}, raw {_named(raw.get(key))}")
    tasks = f"SELECT task_id, created_at, cost_micros, attempts FROM {TASKS_TABLE}"
    kept_tasks = {row[0]: tuple(row[1:]) for row in conn.execute(text(tasks)) if any(row[2:])}
    raw_tasks = {row[0]: tuple(row[1:]) for row in conn.execute(text(PER_TASK)) if any(row[2:])}
    for task_id in sorted(set(kept_tasks) | set(raw_tasks)):
        if kept_tasks.get(task_id) != raw_tasks.get(task_id):
            out.append(f"task {task_id}: kept {kept_tasks.get(task_id)}, raw {raw_tasks.get(task_id)}")
    return out


def _named(sums: Sequence[int] | None) -> dict[str, int] | None:
    return None if sums is None else dict(zip(SUMS, sums, strict=True))
