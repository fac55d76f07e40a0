"""The roll-up: a period's figures grouped in SQL by any of the report's keys, and the totals, read from the
hourly roll-up (``report_hours``, :mod:`store.report_hours`) for the period's whole UTC hours and from the raw
rows for the part-hours at its ends.

One *fact* per ledger row (``spend``), timed at its hold (``spend.created_at``, the time the budgets count it
at), costing what the ledger settled (``charged_micros`` of a ``settled`` row; a held or released row costs 0),
with its attempt's usage and its task's env, stage, group and kind; an attempt the ledger has no row for (none
are expected, as every call is held first) is a fact too, at its start and at $0, so its tokens are not lost.

Every column is a sum of per-fact figures, so every grouping, of any keys, adds up to the totals line exactly,
and the total cost is :func:`ledger_settled`, the ledger's own sum. The counts are per attempt:

    tasks      facts of a task's first attempt: a task counts once, in the hour and row of its first attempt
               (a task whose first attempt lies before the period is not counted in it)
    succeeded  attempts that succeeded
    fell_back  attempts that succeeded on a provider other than their group's first rung (the fleet file's
               ladder as it is now)

Money stays integer micro-dollars from SQL to the caller; Ollama compute is summed in integer milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    MetaData,
    Select,
    String,
    Table,
    and_,
    case,
    column,
    func,
    insert,
    literal,
    select,
    text,
    union_all,
)
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql.selectable import FromClause

from reports.period import Period
from store import report_hours as hours
from store.models import ReportHour, Spend
from store.queries import as_utc
from switchyard.fleet import Fleet

S, H = Spend.__table__, ReportHour.__table__
TOKENS = tuple((name, name) for name, _ in hours.TOKENS)  # the report's token columns
SUMS = (
    "attempts",
    *(name for name, _ in TOKENS),
    "cost_micros",
    "unknown_cost_attempts",
    "unknown_cost_micros",
    "zero_cost_paid_attempts",
)
COUNTS = ("tasks", "succeeded", "fell_back")
FACTS_TABLE = "report_facts"
EDGES_TABLE = "report_part_hours"


@dataclass(frozen=True)
class Line:
    """One row of a roll-up: its key values and exact sums (``ollama_compute_seconds`` is a measure, a float)."""

    keys: dict[str, str]
    sums: dict[str, int]
    compute_seconds: float


def whole_hours(period: Period) -> tuple[datetime, datetime] | None:
    """The whole UTC hours inside the period, ``[first, end)``; None when it holds none."""
    since, until = as_utc(period.since), as_utc(period.until)
    first = since.replace(minute=0, second=0, microsecond=0)
    if first < since:
        first += timedelta(hours=1)
    end = until.replace(minute=0, second=0, microsecond=0)
    return (first, end) if first < end else None


def _parts(period: Period) -> tuple[tuple[datetime, datetime] | None, list[tuple[datetime, datetime]]]:
    """The whole hours (read from the roll-up) and the part-hours around them (read from the raw rows)."""
    since, until = as_utc(period.since), as_utc(period.until)
    inside = whole_hours(period)
    if inside is None:
        return None, [(since, until)] if since < until else []
    edges = [(since, inside[0]), (inside[1], until)]
    return inside, [(a, b) for a, b in edges if a < b]


def _column_type(name: str, dialect: str) -> Any:
    if name == "hour":
        return DateTime(timezone=True) if dialect == "postgresql" else String(26)
    return String(64) if name in hours.KEYS else BigInteger()


def _day_start(hour: Any, dialect: str) -> ColumnElement[Any]:
    """The start of the UTC day of a roll-up hour, of the same type (a day's rows stand at its first hour)."""
    if dialect == "postgresql":
        return func.timezone("UTC", func.date_trunc("day", func.timezone("UTC", hour)))
    return func.substr(hour, 1, 10) + literal(" 00:00:00.000000")


def _temporary(session: Session, name: str) -> Table:
    dialect = session.get_bind().dialect.name
    names = (*hours.KEYS, *hours.SUMS)
    table = Table(name, MetaData(), *(Column(n, _column_type(n, dialect)) for n in names), prefixes=["TEMPORARY"])
    session.execute(text(f"DROP TABLE IF EXISTS {name}"))
    session.execute(CreateTable(table))
    return table


def materialize(session: Session, fleet: Fleet, period: Period) -> Table:
    """The period's roll-up rows by day in a temporary table of this connection that every query of one report
    reads: ``report_hours`` for the whole hours, summed per day as they are copied (a day's rows stand at its
    first hour; 24 times fewer rows to group), and the raw facts summed the same way for the part-hours at the
    ends, which are also kept apart by hour (:data:`EDGES_TABLE`) for a grouping by hour (:func:`hourly`).
    Both are dropped first when a pooled connection still has them from an earlier report."""
    dialect = session.get_bind().dialect.name
    names = list((*hours.KEYS, *hours.SUMS))
    table, edges_table = _temporary(session, FACTS_TABLE), _temporary(session, EDGES_TABLE)
    inside, edges = _parts(period)
    if inside is not None:
        keys = [H.c[name] for name in hours.KEYS[1:]]
        day = _day_start(H.c.hour, dialect)
        rows = select(day, *keys, *(func.sum(H.c[name]) for name in hours.SUMS))
        rows = rows.where(H.c.hour >= inside[0], H.c.hour < inside[1]).group_by(day, *keys)
        session.execute(insert(table).from_select(names, rows))
    for since, until in edges:
        session.execute(hours.period_facts(dialect, into=EDGES_TABLE), {"since": since, "until": until})
    session.execute(insert(table).from_select(names, select(*(edges_table.c[name] for name in names))))
    if dialect == "postgresql":
        session.execute(text(f"ANALYZE {FACTS_TABLE}"))
    return table


def hourly(session: Session, period: Period) -> FromClause:
    """The period's roll-up rows by hour: ``report_hours`` for the whole hours and the part-hours that
    :func:`materialize` kept apart, read in place (a grouping by hour reads them once; no copy)."""
    edges = Table(
        EDGES_TABLE,
        MetaData(),
        *(Column(n, _column_type(n, session.get_bind().dialect.name)) for n in (*hours.KEYS, *hours.SUMS)),
    )
    parts = [select(*(edges.c[name] for name in (*hours.KEYS, *hours.SUMS)))]
    inside = whole_hours(period)
    if inside is not None:
        whole = select(*(H.c[name] for name in (*hours.KEYS, *hours.SUMS)))
        parts.append(whole.where(H.c.hour >= inside[0], H.c.hour < inside[1]))
    return union_all(*parts).subquery("hourly")


def hour_costs(session: Session, period: Period) -> list[tuple[Any, int, int]]:
    """Each hour's (hour, cost, attempts) of the period's dearest hour candidates: the dearest whole hour from
    ``report_hours``, and the part-hours at the ends from the raw rows (see :func:`reports.forward.peak_hour`)."""
    inside, edges = _parts(period)
    found = []
    if inside is not None:
        cost = func.sum(H.c.cost_micros)
        query = select(H.c.hour, cost, func.sum(H.c.attempts)).where(H.c.hour >= inside[0], H.c.hour < inside[1])
        found += list(session.execute(query.group_by(H.c.hour).order_by(cost.desc(), H.c.hour).limit(1)))
    for since, until in edges:
        part = raw(session, Period(since, until))
        query = select(func.min(part.c.hour), func.sum(part.c.cost_micros), func.sum(part.c.attempts))
        found += [row for row in session.execute(query) if row[0] is not None]
    return [(time_text(hour), int(cost or 0), int(attempts or 0)) for hour, cost, attempts in found]


def time_text(value: Any) -> str:
    """A roll-up hour as the report writes it (``2026-11-30 14:00``, UTC)."""
    if isinstance(value, datetime):
        return as_utc(value).strftime(TIME_FORMATS["hour"])
    return key_text("hour", str(value)[:13])


def raw(session: Session, period: Period) -> FromClause:
    """The period's roll-up rows worked out from the raw rows alone (no ``report_hours``): what the roll-up must
    equal, and what the tests compare it with."""
    dialect = session.get_bind().dialect.name
    query = hours.period_facts(dialect).bindparams(since=as_utc(period.since), until=as_utc(period.until))
    columns = [column(name, _column_type(name, dialect)) for name in (*hours.KEYS, *hours.SUMS)]
    return query.columns(*columns).subquery("raw_hours")


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


def key_column(source: FromClause, key: str, dialect: str) -> ColumnElement[Any]:
    if key in ("day", "hour"):
        return time_key(source.c.hour, key, dialect).label(key)
    return source.c[key].label(key)


def _free(fleet: Fleet) -> list[str]:
    return sorted(name for name, provider in fleet.providers.items() if provider.free)


def _fell_back(source: FromClause, fleet: Fleet) -> ColumnElement[Any]:
    """Successes on a provider other than the group's first rung (the fleet file's ladder)."""
    first = case({group.name: group.ladder[0] for group in fleet.groups}, value=source.c.group, else_=None)
    return case((and_(first.is_not(None), source.c.provider != first), source.c.succeeded), else_=0)


def _zero_paid(source: FromClause, fleet: Fleet) -> ColumnElement[Any]:
    free = _free(fleet)
    paid = source.c.provider.not_in(free) if free else literal(True)
    return case((paid, source.c.zero_cost_attempts), else_=0)


def rollup_query(fleet: Fleet, source: FromClause, keys: Sequence[str], dialect: str) -> Select[Any]:
    columns = [key_column(source, key, dialect) for key in keys]
    plain = [name for name in SUMS if name != "zero_cost_paid_attempts"]
    query = select(
        *columns,
        func.sum(source.c.tasks).label("tasks"),
        func.sum(source.c.succeeded).label("succeeded"),
        func.sum(_fell_back(source, fleet)).label("fell_back"),
        *(func.sum(source.c[name]).label(name) for name in plain),
        func.sum(_zero_paid(source, fleet)).label("zero_cost_paid_attempts"),
        func.sum(source.c.compute_ms).label("compute_ms"),
    )
    query = query.group_by(*columns).having(func.sum(source.c.facts) > 0)
    return query.order_by(*columns)


def rollup(
    session: Session, fleet: Fleet, period: Period, keys: Sequence[str], *, source: FromClause | None = None
) -> list[Line]:
    """The period's lines grouped by ``keys`` (no keys: one totals line, also for an empty period), read from
    ``source`` (the rows of :func:`materialize`; by hour, :func:`hourly`) or, without it, from the raw rows
    (:func:`raw`)."""
    dialect = session.get_bind().dialect.name
    lines = []
    if source is None:
        source = raw(session, period)
    elif (
        "hour" in keys and isinstance(source, Table) and source.name == FACTS_TABLE
    ):  # the day's rows of materialize: read the hours
        source = hourly(session, period)
    query = rollup_query(fleet, source, keys, dialect)
    for row in session.execute(query).mappings():
        sums = {name: int(row[name] or 0) for name in (*COUNTS, *SUMS)}
        key_values = {key: key_text(key, row[key]) for key in keys}
        lines.append(Line(key_values, sums, int(row["compute_ms"] or 0) / 1000))
    if not keys and not lines:
        lines.append(Line({}, dict.fromkeys((*COUNTS, *SUMS), 0), 0.0))
    return lines


def cost_by(session: Session, source: FromClause, keys: Sequence[str]) -> list[tuple[dict[str, str], int, int]]:
    """Cost and attempts only, grouped by ``keys`` in one GROUP BY: what a chart draws."""
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
        S.c.state == "settled", S.c.created_at >= as_utc(period.since), S.c.created_at < as_utc(period.until)
    )
    return int(session.execute(query).scalar_one())
