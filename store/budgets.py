"""The SQL of the budget ledger: counters per budget window, operators' overrides, alerts, and the moves of a
spend row (held → settled | released). Plain functions on a connection passed in; :mod:`routing.ledger` owns
the transactions.

A hold must never let two concurrent attempts pass a cap together, on SQLite and on PostgreSQL alike: the
counter is raised by a conditional ``UPDATE … SET used = used + m WHERE … AND used + m <= cap``. On
PostgreSQL the UPDATE takes the row lock and re-checks the condition on the row as the previous holder
committed it; on SQLite the transaction holds the database's write lock from ``BEGIN IMMEDIATE`` on.

Every hold and settle runs these statements, so they are SQLAlchemy Core statements built once with bound
parameters (their compiled form is cached) and they read plain rows: building expressions, or loading ORM
objects into a session, costs more than running the statements on SQLite.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    CursorResult,
    Executable,
    Table,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from routing.budgets import Action, Alert, Budget, CounterKey, as_utc, label, window_bounds
from store.models import TERMINAL_STATUSES, BudgetAlert, BudgetCounter, BudgetOverride, Spend, Task
from switchyard.fleet_models import Scope, Window

Db = Connection | Session  # the ledger runs on a Core connection; read-only callers may pass a session
OverrideRow = tuple[str, str, str, int, int | None, str]  # scope, target, window, cap, alert, action
_COUNTERS, _SPEND, _OVERRIDES = (cast(Table, model.__table__) for model in (BudgetCounter, Spend, BudgetOverride))
_C, _S, _O = _COUNTERS.c, _SPEND.c, _OVERRIDES.c
_INSERTS: dict[tuple[str, str], Executable] = {}  # (dialect, table) -> INSERT … ON CONFLICT DO NOTHING RETURNING


def _dialect(db: Db) -> str:
    return db.dialect.name if isinstance(db, Connection) else db.get_bind().dialect.name


def _insert_ignoring_conflicts(db: Db, table: Table, rows: list[dict[str, Any]]) -> int:
    """``INSERT … ON CONFLICT DO NOTHING``; how many rows went in (counted by RETURNING: psycopg reports no
    rowcount for it)."""
    dialect = _dialect(db)
    statement = _INSERTS.get((dialect, table.name))
    if statement is None:
        insert: postgresql.Insert | sqlite.Insert
        if dialect == "postgresql":
            insert = postgresql.insert(table)
        elif dialect == "sqlite":
            insert = sqlite.insert(table)
        else:
            raise NotImplementedError(f"the ledger supports sqlite and postgresql, not {dialect}")
        statement = _INSERTS[(dialect, table.name)] = insert.on_conflict_do_nothing().returning(*table.primary_key)
    return len(db.execute(statement, rows[0] if len(rows) == 1 else rows).all())  # one row: no executemany


_BULK: dict[tuple[str, int], Executable] = {}  # (add | move, how many counters) -> one UPDATE for them all


def _key(suffix: int | str = "") -> ColumnElement[bool]:
    """The counter named by the parameters ``k_scope<suffix>``, ``k_target<suffix>``, … (see :func:`_params`)."""
    return and_(
        _C.scope == bindparam(f"k_scope{suffix}"),
        _C.target == bindparam(f"k_target{suffix}"),
        _C.window == bindparam(f"k_window{suffix}"),
        _C.window_start == bindparam(f"k_start{suffix}", type_=_C.window_start.type),
    )


_KEY = _key()
_MICROS = bindparam("k_micros", type_=BigInteger())
_ADD = (
    update(_COUNTERS)
    .where(_KEY, _C.used_micros + _MICROS <= bindparam("k_cap", type_=BigInteger()))
    .values(used_micros=_C.used_micros + _MICROS, held_micros=_C.held_micros + _MICROS)
    .returning(_C.used_micros)
)
_MOVE = (
    update(_COUNTERS)
    .where(_KEY)
    .values(
        used_micros=_C.used_micros + bindparam("k_used", type_=BigInteger()),
        held_micros=_C.held_micros + bindparam("k_held", type_=BigInteger()),
    )
    .returning(_C.used_micros)
)
_GET = select(_C.used_micros).where(_KEY)
_OVERRIDES_IN_ORDER = select(_O.scope, _O.target, _O.window, _O.cap_micros, _O.alert_micros, _O.action).order_by(
    _O.updated_at, _O.scope
)


def _params(key: CounterKey, *, suffix: str = "", **more: int) -> dict[str, Any]:
    names = {"scope": key.scope, "target": key.target, "window": key.window, "start": key.window_start}
    return {**{f"k_{name}{suffix}": value for name, value in names.items()}, **more}


# --- counters ------------------------------------------------------------------------------------------


def ensure_counters(db: Db, keys: Iterable[CounterKey]) -> None:
    """Create the counters ``keys`` that do not exist yet, each starting from the spend rows already in its
    window (a budget added mid-window, or spend the ledger did not count, still counts).

    Rows held at that moment are seeded as held, but their release or settlement moves only the counters
    they held against, so a budget added while calls are in flight over-counts them: the safe direction."""
    missing = sorted(key for key in keys if counter(db, key) is None)
    rows = [{**_key_columns(key), **_seed(db, key)} for key in missing]
    if rows:  # one order everywhere: PostgreSQL locks inserted keys in VALUES order
        _insert_ignoring_conflicts(db, _COUNTERS, rows)


def _seed(db: Db, key: CounterKey) -> dict[str, int]:
    end = window_bounds(key.window, key.window_start)[1]
    held = case((_S.state == "held", _S.held_micros), else_=0)
    query = select(func.coalesce(func.sum(_S.charged_micros), 0), func.coalesce(func.sum(held), 0))
    query = query.where(_S.created_at >= key.window_start, _S.created_at < end)
    if key.scope != "all":
        query = query.where(_S[key.scope] == key.target)
    charged, still_held = db.execute(query).one()
    return {"used_micros": int(charged) + int(still_held), "held_micros": int(still_held)}


def _key_columns(key: CounterKey) -> dict[str, Any]:
    return {"scope": key.scope, "target": key.target, "window": key.window, "window_start": key.window_start}


def add_within_caps(db: Db, caps: Mapping[CounterKey, int], *, micros: int) -> dict[CounterKey, int]:
    """Raise each counter of ``caps`` by ``micros`` where it stays within its cap: the new value of each one
    raised. A counter missing from the answer refused (or does not exist), and the caller rolls back.

    SQLite: one statement for them all (the transaction holds the write lock, so the order rows are written in
    does not matter). PostgreSQL: one per counter in key order, so every hold locks rows in the same order
    (no deadlocks between holds), stopping at the first refusal."""
    if not caps:
        return {}
    if _dialect(db) == "sqlite":
        params = _bulk_params(caps, k_micros=micros)
        params.update({f"k_cap{i}": cap for i, cap in enumerate(caps.values())})
        return _by_key(caps, db.execute(_bulk("add", len(caps)), params))
    raised = {}
    for key, cap in sorted(caps.items()):
        value = db.execute(_ADD, _params(key, k_micros=micros, k_cap=cap)).scalar_one_or_none()
        if value is None:
            break
        raised[key] = int(value)
    return raised


def move_counters(db: Db, keys: Sequence[CounterKey], *, used_delta: int, held_delta: int) -> dict[CounterKey, int]:
    """Apply a settlement or a release to the counters the hold raised; the new value of each (0 when the
    counter is not there). One statement on SQLite, one per counter in key order on PostgreSQL."""
    if not keys:
        return {}
    if _dialect(db) == "sqlite":
        params = _bulk_params(keys, k_used=used_delta, k_held=held_delta)
        found = _by_key(keys, db.execute(_bulk("move", len(keys)), params))
        return {key: found.get(key, 0) for key in keys}
    moved = {
        key: db.execute(_MOVE, _params(key, k_used=used_delta, k_held=held_delta)).scalar_one_or_none()
        for key in sorted(keys)
    }
    return {key: int(value or 0) for key, value in moved.items()}


def _bulk(kind: str, count: int) -> Executable:
    """``UPDATE budget_counters … WHERE <counter 0> OR <counter 1> …`` for ``count`` counters (``add``: each
    only within its cap ``k_cap<i>``), built once per kind and count."""
    statement = _BULK.get((kind, count))
    if statement is None:
        if kind == "add":
            match = [
                and_(_key(i), _C.used_micros + _MICROS <= bindparam(f"k_cap{i}", type_=BigInteger()))
                for i in range(count)
            ]
            values = {"used_micros": _C.used_micros + _MICROS, "held_micros": _C.held_micros + _MICROS}
        else:
            match = [_key(i) for i in range(count)]
            values = {
                "used_micros": _C.used_micros + bindparam("k_used", type_=BigInteger()),
                "held_micros": _C.held_micros + bindparam("k_held", type_=BigInteger()),
            }
        returning = (_C.scope, _C.target, _C.window, _C.used_micros)
        statement = _BULK[(kind, count)] = update(_COUNTERS).where(or_(*match)).values(**values).returning(*returning)
    return statement


def _bulk_params(keys: Iterable[CounterKey], **more: int) -> dict[str, Any]:
    params: dict[str, Any] = dict(more)
    for i, key in enumerate(keys):
        params.update(_params(key, suffix=str(i)))
    return params


def _by_key(keys: Iterable[CounterKey], rows: Iterable[Any]) -> dict[CounterKey, int]:
    """RETURNING rows matched back to their keys: one hold's counters differ in (scope, target, window)."""
    named = {(key.scope, key.target, key.window): key for key in keys}
    return {named[(scope, target, window)]: int(value) for scope, target, window, value in rows}


def counter(db: Db, key: CounterKey) -> int | None:
    """What the counter ``key`` holds, or None when it was never created."""
    found = db.execute(_GET, _params(key)).scalar_one_or_none()
    return None if found is None else int(found)


def used(db: Db, keys: Iterable[CounterKey]) -> dict[CounterKey, int]:
    """What each counter holds now; a counter never written counts 0."""
    return {key: counter(db, key) or 0 for key in keys}


# --- overrides and alerts ------------------------------------------------------------------------------


def override_rows(db: Db) -> tuple[OverrideRow, ...]:
    """The operators' overrides as plain rows, oldest first: one small query, cheap enough for every hold."""
    return tuple(cast(OverrideRow, tuple(row)) for row in db.execute(_OVERRIDES_IN_ORDER))


def budgets_of(rows: Sequence[OverrideRow]) -> list[Budget]:
    return [
        Budget(cast(Scope, scope), target, cast(Window, window), cap, alert, cast(Action, action), "override")
        for scope, target, window, cap, alert, action in rows
    ]


def overrides(db: Db) -> list[Budget]:
    return budgets_of(override_rows(db))


def upsert_override(db: Db, *, budget: Budget, now: datetime) -> None:
    values = {
        "scope": budget.scope,
        "target": budget.target,
        "window": budget.window,
        "cap_micros": budget.cap_micros,
        "alert_micros": budget.alert_micros,
        "action": budget.action,
        "updated_at": now,
    }
    where = (_O.scope == budget.scope, _O.target == budget.target, _O.window == budget.window)
    changed = update(_OVERRIDES).where(*where).values(**values)
    if not cast(CursorResult[Any], db.execute(changed)).rowcount:
        _insert_ignoring_conflicts(db, _OVERRIDES, [values])
        db.execute(update(_OVERRIDES).where(*where).values(**values))  # a racing insert won: ours is last


def record_alert(db: Db, key: CounterKey, *, budget: Budget, used_micros: int, task_id: str, now: datetime) -> bool:
    """Record that ``key`` reached its alert line; False when this window already has its alert."""
    row = {
        **_key_columns(key),
        "used_micros": used_micros,
        "alert_micros": budget.alert_micros,
        "cap_micros": budget.cap_micros,
        "task_id": task_id,
        "created_at": now,
    }
    return _insert_ignoring_conflicts(db, cast(Table, BudgetAlert.__table__), [row]) == 1


def alerts(db: Db, *, since: datetime | None = None) -> list[Alert]:
    table = cast(Table, BudgetAlert.__table__)
    statement = select(table).order_by(table.c.created_at, table.c.id)
    if since is not None:
        statement = statement.where(table.c.created_at >= as_utc(since))
    return [
        Alert(
            label(row.scope, row.target, row.window),
            row.scope,
            row.target,
            row.window,
            as_utc(row.window_start),
            row.used_micros,
            row.alert_micros,
            row.cap_micros,
            row.task_id,
            as_utc(row.created_at),
        )
        for row in db.execute(statement)
    ]


# --- spend rows ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpendRow:
    """What the ledger reads of a spend row (a plain row: no ORM object, no identity map)."""

    id: int
    state: str
    held_micros: int
    provider: str
    model: str
    group: str
    environment: str
    stage: str
    budget_keys: list[Any] | None


_ROW = (_S.id, _S.state, _S.held_micros, _S.provider, _S.model, _S.group, _S.environment, _S.stage, _S.budget_keys)
_THIS = (_S.task_id == bindparam("k_task"), _S.attempt == bindparam("k_attempt"))
_LOCKED_SPEND = select(*_ROW).where(*_THIS).with_for_update()
_END_HELD = (  # settle or release a hold still held; RETURNING gives what it held (held_micros is not changed)
    update(_SPEND)
    .where(*_THIS, _S.state == "held")
    .values(
        state=bindparam("k_state"),
        charged_micros=bindparam("k_charged", type_=BigInteger()),
        settled_at=bindparam("k_at", type_=_S.settled_at.type),
        price_version=bindparam("k_version", type_=_S.price_version.type),
    )
    .returning(*_ROW)
)


def _spend_row(found: Any) -> SpendRow | None:
    return None if found is None else SpendRow(*found)


def locked_spend(db: Db, *, task_id: str, attempt: int) -> SpendRow | None:
    """The spend row of (task, attempt), locked until the transaction ends (PostgreSQL; SQLite holds its
    write lock already)."""
    return _spend_row(db.execute(_LOCKED_SPEND, {"k_task": task_id, "k_attempt": attempt}).one_or_none())


@dataclass(frozen=True)
class Ending:
    """How a hold ends: ``settled`` at the real cost, or ``released`` (charged 0)."""

    state: str
    charged_micros: int
    at: datetime
    price_version: str | None = None


def end_held(db: Db, *, task_id: str, attempt: int, ending: Ending) -> SpendRow | None:
    """Move the hold of (task, attempt) from ``held`` to ``ending`` in one statement; the row as it was held,
    or None when there is no hold still held (none at all, settled or released)."""
    params = {"k_task": task_id, "k_attempt": attempt, "k_state": ending.state, "k_charged": ending.charged_micros}
    found = db.execute(_END_HELD, {**params, "k_at": ending.at, "k_version": ending.price_version}).one_or_none()
    return _spend_row(found)


def insert_hold(db: Db, *, row: dict[str, Any]) -> bool:
    """Insert a ``held`` spend row; False when (task, attempt) has one already (a racing twin won)."""
    return _insert_ignoring_conflicts(db, _SPEND, [{**row, "state": "held", "charged_micros": 0}]) == 1


def set_spend(db: Db, spend_id: int, **values: Any) -> None:
    db.execute(update(_SPEND).where(_S.id == spend_id).values(**values))


def stale_holds(db: Db, *, created_before: datetime) -> list[tuple[str, int]]:
    """(task, attempt) of holds still ``held`` that are older than ``created_before`` or whose task ended."""
    tasks = cast(Table, Task.__table__)
    statement = (
        select(_S.task_id, _S.attempt)
        .join(tasks, tasks.c.id == _S.task_id)
        .where(_S.state == "held")
        .where(or_(_S.created_at < as_utc(created_before), tasks.c.status.in_(TERMINAL_STATUSES)))
        .order_by(_S.created_at)
    )
    return [(task_id, attempt) for task_id, attempt in db.execute(statement)]
