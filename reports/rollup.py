"""The roll-up: the period's ledger rows (one per attempt, ``spend``) joined to their attempts and tasks, grouped
in SQL by any of the report's keys, and the totals.

One fact per ledger row, timed at its hold (``spend.created_at``, the time the budgets count it at), costing what
the ledger settled (``charged_micros`` of a ``settled`` row; a released hold costs 0). Attempts the ledger has no
row for (none are expected, as every call is held first) are facts too, at their start and at $0, so their
tokens are not lost. Money stays integer micro-dollars from SQL to the caller, so every grouping adds up to the
same total to the micro-dollar, and that total is :func:`ledger_settled`, the ledger's own sum.

``tasks``, ``succeeded`` and ``fell_back`` count distinct tasks: SQL groups first by the keys and the task, then
by the keys. A task whose attempts fall into two rows (two providers, two days) counts once in each, so those
columns of the rows may add up to more than the totals line; every other column adds up exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    CompoundSelect,
    DateTime,
    Float,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    and_,
    case,
    exists,
    func,
    insert,
    literal,
    select,
    text,
    union_all,
)
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql.selectable import FromClause, Subquery

from reports.period import Period
from store.costs import UNKNOWN_COST
from store.models import Attempt, Spend, Task
from store.queries import as_utc
from switchyard.fleet import Fleet

S, A, T = Spend.__table__, Attempt.__table__, Task.__table__
TOKENS = (  # report column <- attempts column
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_tokens", "cached_input_tokens"),
    ("cache_write_5m_tokens", "cache_write_tokens"),
    ("cache_write_1h_tokens", "cache_write_1h_tokens"),
    ("reasoning_tokens", "reasoning_tokens"),
)
SUMS = (
    "attempts",
    *(name for name, _ in TOKENS),
    "cost_micros",
    "unknown_cost_attempts",
    "unknown_cost_micros",
    "zero_cost_paid_attempts",
)
COUNTS = ("tasks", "succeeded", "fell_back")
FACT_TYPES: tuple[tuple[str, Any], ...] = (
    ("task_id", String(36)),
    ("provider", String(32)),
    ("model", String(64)),
    ("env", String(32)),
    ("stage", String(32)),
    ("group", String(32)),
    ("at", DateTime(timezone=True)),
    ("cost_micros", BigInteger()),
    ("unknown_cost_attempts", Integer()),
    ("unknown_cost_micros", BigInteger()),
    ("kind", String(16)),
    ("fell_back", Integer()),
    *((name, BigInteger()) for name, _ in TOKENS),
    ("compute_seconds", Float()),
    ("attempts", Integer()),
    ("succeeded", Integer()),
)
DERIVED: tuple[tuple[str, Any], ...] = (  # after "day" and "hour" (see materialize)
    ("zero_cost_paid_attempts", Integer()),
    ("first_of_task", Integer()),
    ("task_succeeded", Integer()),
)
TASK_KEYS = frozenset({"env", "stage", "group", "kind"})  # each task is in one group of these: counted per row


@dataclass(frozen=True)
class Line:
    """One row of a roll-up: its key values and exact sums (``ollama_compute_seconds`` is a measure, a float)."""

    keys: dict[str, str]
    sums: dict[str, int]
    compute_seconds: float


def _in_period(column: Any, period: Period) -> list[ColumnElement[bool]]:
    return [column >= as_utc(period.since), column < as_utc(period.until)]


def _first_rung(fleet: Fleet) -> ColumnElement[Any]:
    """The provider a task's group tries first, from the fleet file (a task on another one fell back)."""
    return case({group.name: group.ladder[0] for group in fleet.groups}, value=T.c.group, else_=None)


def _task_columns(fleet: Fleet) -> list[Any]:
    first = _first_rung(fleet)
    fell = case((and_(T.c.provider.is_not(None), first.is_not(None), T.c.provider != first), 1), else_=0)
    return [T.c.kind.label("kind"), fell.label("fell_back")]


def _attempt_columns() -> list[Any]:
    tokens = [func.coalesce(A.c[column], 0).label(name) for name, column in TOKENS]
    return [
        *tokens,
        func.coalesce(A.c.compute_seconds, 0.0).label("compute_seconds"),
        case((A.c.id.is_(None), 0), else_=1).label("attempts"),
        case((A.c.status == "succeeded", 1), else_=0).label("succeeded"),
    ]


def facts(fleet: Fleet, period: Period) -> Subquery:
    """The facts as a subquery (joined again by every query that reads it); see :func:`materialize`."""
    return facts_select(fleet, period).subquery("facts")


FACTS_TABLE = "report_facts"


def materialize(session: Session, fleet: Fleet, period: Period) -> Table:
    """The period's facts, joined once into a temporary table of this connection that every query of one report
    reads (a report runs several roll-ups; the joins are the dear part), with what each roll-up would otherwise
    work out per row: the day and hour, the $0-on-a-paid-provider flag, whether the row is its task's first
    (``first_of_task``) and whether the task succeeded in the period (``task_succeeded``). With those, a roll-up
    by keys that belong to the task (env, stage, group, kind) counts tasks in one GROUP BY. Dropped first when a
    pooled connection still has one from an earlier report."""
    dialect = session.get_bind().dialect.name
    moment = DateTime() if dialect == "postgresql" else String(16)
    columns = (*FACT_TYPES, ("day", moment), ("hour", moment), *DERIVED)
    table = Table(FACTS_TABLE, MetaData(), *(Column(name, kind) for name, kind in columns), prefixes=["TEMPORARY"])
    session.execute(text(f"DROP TABLE IF EXISTS {FACTS_TABLE}"))
    session.execute(CreateTable(table))
    source = facts(fleet, period)
    first = func.row_number().over(partition_by=source.c.task_id, order_by=(source.c.at, source.c.provider))
    rows = select(
        *(source.c[name] for name, _ in FACT_TYPES),
        time_key(source.c.at, "day", dialect),
        time_key(source.c.at, "hour", dialect),
        _zero_paid(source, _free(fleet)),
        case((first == 1, 1), else_=0),
        func.max(source.c.succeeded).over(partition_by=source.c.task_id),
    )
    session.execute(insert(table).from_select([name for name, _ in columns], rows))
    if dialect == "postgresql":
        session.execute(text(f"ANALYZE {FACTS_TABLE}"))
    return table


def _free(fleet: Fleet) -> list[str]:
    return sorted(name for name, provider in fleet.providers.items() if provider.free)


def facts_select(fleet: Fleet, period: Period) -> CompoundSelect[Any]:
    """Every ledger row of the period with its attempt's usage and its task's kind, plus unledgered attempts."""
    charged = case((S.c.state == "settled", S.c.charged_micros), else_=0)
    unknown = and_(S.c.state == "settled", S.c.price_version == UNKNOWN_COST)
    ledgered = select(
        S.c.task_id,
        S.c.provider,
        S.c.model,
        T.c.environment.label("env"),
        T.c.stage,
        T.c.group,
        S.c.created_at.label("at"),
        charged.label("cost_micros"),
        case((unknown, 1), else_=0).label("unknown_cost_attempts"),
        case((unknown, S.c.charged_micros), else_=0).label("unknown_cost_micros"),
        *_task_columns(fleet),
        *_attempt_columns(),
    ).select_from(
        S.outerjoin(A, and_(A.c.task_id == S.c.task_id, A.c.attempt == S.c.attempt)).join(T, T.c.id == S.c.task_id)
    )
    ledgered = ledgered.where(*_in_period(S.c.created_at, period))
    has_row = exists().where(S.c.task_id == A.c.task_id, S.c.attempt == A.c.attempt)
    zero = literal(0)
    unledgered = select(
        A.c.task_id,
        A.c.provider,
        A.c.model,
        T.c.environment.label("env"),
        T.c.stage,
        T.c.group,
        A.c.started_at.label("at"),
        zero.label("cost_micros"),
        zero.label("unknown_cost_attempts"),
        zero.label("unknown_cost_micros"),
        *_task_columns(fleet),
        *_attempt_columns(),
    ).select_from(A.join(T, T.c.id == A.c.task_id))
    unledgered = unledgered.where(~has_row, *_in_period(A.c.started_at, period))
    return union_all(ledgered, unledgered)


def time_key(column: Any, unit: str, dialect: str) -> ColumnElement[Any]:
    """The UTC day, hour or minute a timestamp falls in, in SQL; :func:`key_text` writes it as text.

    PostgreSQL truncates the timestamp (``date_trunc``; ``to_char`` on every row costs more than the rest of a
    roll-up); SQLite keeps UTC moments as ISO text, whose first characters are the day, the hour, the minute."""
    if dialect == "postgresql":
        return func.date_trunc(unit, func.timezone("UTC", column))
    return func.substr(column, 1, {"day": 10, "hour": 13, "minute": 16}[unit])


TIME_FORMATS = {"day": "%Y-%m-%d", "hour": "%Y-%m-%d %H:00", "minute": "%Y-%m-%d %H:%M"}


def key_text(key: str, value: Any) -> str:
    """A key's value as the report writes it: ``2026-11-30`` for a day, ``2026-11-30 14:00`` for an hour."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime(TIME_FORMATS[key])
    text_value = str(value)
    return text_value + ":00" if key == "hour" and len(text_value) == 13 else text_value.replace("T", " ")


def key_column(facts: FromClause, key: str, dialect: str) -> ColumnElement[Any]:
    if key in ("day", "hour") and key not in facts.c:
        return time_key(facts.c.at, key, dialect).label(key)
    return facts.c[key].label(key)


def _zero_paid(facts: FromClause, free: Sequence[str]) -> ColumnElement[Any]:
    tokens = sum((facts.c[name] for name, _ in TOKENS), start=literal(0))
    paid = facts.c.provider.not_in(free) if free else literal(True)
    return case((and_(paid, facts.c.attempts == 1, tokens > 0, facts.c.cost_micros == 0), 1), else_=0)


def _zero_paid_of(facts: FromClause, free: Sequence[str]) -> ColumnElement[Any]:
    return facts.c.zero_cost_paid_attempts if "zero_cost_paid_attempts" in facts.c else _zero_paid(facts, free)


def _per_task(facts: FromClause, keys: Sequence[str], dialect: str, free: Sequence[str]) -> Subquery:
    columns = [key_column(facts, key, dialect) for key in keys]
    plain = [facts.c[name] for name in SUMS if name != "zero_cost_paid_attempts"]
    sums = [func.sum(column).label(column.name) for column in plain]
    query = select(
        *columns,
        *sums,
        func.sum(_zero_paid_of(facts, free)).label("zero_cost_paid_attempts"),
        func.sum(facts.c.compute_seconds).label("compute_seconds"),
        func.max(facts.c.succeeded).label("succeeded"),
        func.max(facts.c.fell_back).label("fell_back"),
    )
    return query.group_by(*columns, facts.c.task_id).subquery("per_task")


def _by_task_keys(source: FromClause, keys: Sequence[str]) -> Select[Any]:
    """Keys that put each task in one group (or none): tasks are the rows that are their task's first."""
    columns = [source.c[key].label(key) for key in keys]
    first = source.c.first_of_task
    query = select(
        *columns,
        func.sum(first).label("tasks"),
        func.sum(first * source.c.task_succeeded).label("succeeded"),
        func.sum(first * source.c.fell_back).label("fell_back"),
        *(func.sum(source.c[name]).label(name) for name in SUMS),
        func.sum(source.c.compute_seconds).label("compute_seconds"),
    )
    return query.group_by(*columns).order_by(*columns)


def rollup_query(fleet: Fleet, source: FromClause, keys: Sequence[str], dialect: str) -> Select[Any]:
    if "first_of_task" in source.c and set(keys) <= TASK_KEYS:
        return _by_task_keys(source, keys)
    per_task = _per_task(source, keys, dialect, _free(fleet))
    columns = [per_task.c[key] for key in keys]
    query = select(
        *columns,
        func.count().label("tasks"),
        func.sum(per_task.c.succeeded).label("succeeded"),
        func.sum(per_task.c.fell_back).label("fell_back"),
        *(func.sum(per_task.c[name]).label(name) for name in SUMS),
        func.sum(per_task.c.compute_seconds).label("compute_seconds"),
    )
    return query.group_by(*columns).order_by(*columns)


def rollup(
    session: Session, fleet: Fleet, period: Period, keys: Sequence[str], *, source: FromClause | None = None
) -> list[Line]:
    """The period's lines grouped by ``keys`` (no keys: one totals line, also for an empty period), read from
    ``source`` (the facts of :func:`materialize`) or, without it, from the tables themselves."""
    dialect = session.get_bind().dialect.name
    lines = []
    query = rollup_query(fleet, facts(fleet, period) if source is None else source, keys, dialect)
    for row in session.execute(query).mappings():
        sums = {name: int(row[name] or 0) for name in (*COUNTS, *SUMS)}
        key_values = {key: key_text(key, row[key]) for key in keys}
        lines.append(Line(key_values, sums, float(row["compute_seconds"] or 0.0)))
    if not keys and not lines:
        lines.append(Line({}, dict.fromkeys((*COUNTS, *SUMS), 0), 0.0))
    return lines


def cost_by(session: Session, source: FromClause, keys: Sequence[str]) -> list[tuple[dict[str, str], int, int]]:
    """Cost and attempts only, grouped by ``keys`` in one GROUP BY (no task counts): what a chart draws."""
    dialect = session.get_bind().dialect.name
    columns = [key_column(source, key, dialect) for key in keys]
    query = select(*columns, func.sum(source.c.cost_micros), func.sum(source.c.attempts)).group_by(*columns)
    return [
        ({key: key_text(key, row[i]) for i, key in enumerate(keys)}, int(row[-2] or 0), int(row[-1] or 0))
        for row in session.execute(query.order_by(*columns))
    ]


def ledger_settled(session: Session, period: Period) -> int:
    """The ledger's settled spend of the period in micro-dollars: what the budgets counted as charged."""
    query = select(func.coalesce(func.sum(S.c.charged_micros), 0)).where(
        S.c.state == "settled", *_in_period(S.c.created_at, period)
    )
    return int(session.execute(query).scalar_one())
