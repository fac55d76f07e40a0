"""The SQL of the budget ledger: counters per budget window, operators' overrides, alerts, and the moves of a
spend row (held → settled | released). Plain functions on a connection passed in; :mod:`routing.ledger` owns
the transactions.

A hold must never let two concurrent attempts pass a cap together, on SQLite and on PostgreSQL alike: the
counter is raised by a conditional ``UPDATE … SET used = used + m WHERE … AND used + m <= cap``. On
PostgreSQL the UPDATE takes the row lock and re-checks the condition on the row as the previous holder
committed it; on SQLite the transaction holds the database's write lock from ``BEGIN IMMEDIATE`` on.

Every hold and settle runs the statements of the hot path (the overrides, the spend row's insert and end, the
counters' raise and move), so they are SQLAlchemy Core statements built once with bound parameters and run
through :mod:`store.prepared` on the transaction's cursor, reading plain rows: building expressions, loading
ORM objects, or SQLAlchemy's work per execution costs more than SQLite takes to run them. The rest (new
counters, alerts, overrides written, the sweeper) runs through ``Connection.execute``.
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
from sqlalchemy.exc import MultipleResultsFound
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import UpdateBase

from store.models import TERMINAL_STATUSES, Attempt, BudgetAlert, BudgetCounter, BudgetOverride, Spend, Task
from store.prepared import run
from switchyard.budgets import Action, Alert, Budget, CounterKey, as_utc, label, window_bounds
from switchyard.errors import NotFound
from switchyard.fleet_models import Scope, Window

OverrideRow = tuple[str, str, str, int, int | None, str]  # scope, target, window, cap, alert, action
_COUNTERS, _SPEND, _OVERRIDES = (cast(Table, model.__table__) for model in (BudgetCounter, Spend, BudgetOverride))
_C, _S, _O = _COUNTERS.c, _SPEND.c, _OVERRIDES.c
_INSERTS: dict[tuple[str, str], UpdateBase] = {}  # (dialect, table) -> INSERT … ON CONFLICT DO NOTHING RETURNING


def _insert(dialect: str, table: Table) -> UpdateBase:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING <key>`` into ``table`` (RETURNING counts the rows that went
    in: psycopg reports no rowcount for it), built once per dialect."""
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
    return statement


def _insert_ignoring_conflicts(db: Connection, table: Table, rows: list[dict[str, Any]]) -> int:
    """Insert ``rows``, skipping those whose key is taken; how many went in."""
    return len(db.execute(_insert(db.dialect.name, table), rows).all())


_BULK: dict[tuple[str, int], UpdateBase] = {}  # (add | move, how many counters) -> one UPDATE for them all


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


def ensure_counters(db: Connection, keys: Iterable[CounterKey]) -> None:
    """Create the counters ``keys`` that do not exist yet, each starting from the spend rows already in its
    window (a budget added mid-window, or spend the ledger did not count, still counts).

    Rows held at that moment are seeded as held, but their release or settlement moves only the counters
    they held against, so a budget added while calls are in flight over-counts them: the safe direction."""
    missing = sorted(key for key in keys if counter(db, key) is None)
    rows = [{**_key_columns(key), **_seed(db, key)} for key in missing]
    if rows:  # one order everywhere: PostgreSQL locks inserted keys in VALUES order
        _insert_ignoring_conflicts(db, _COUNTERS, rows)


def _seed(db: Connection, key: CounterKey) -> dict[str, int]:
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


def add_within_caps(db: Connection, caps: Mapping[CounterKey, int], *, micros: int) -> dict[CounterKey, int]:
    """Raise each counter of ``caps`` by ``micros`` where it stays within its cap: the new value of each one
    raised. A counter missing from the answer refused (or does not exist), and the caller rolls back.

    SQLite: one statement for them all (the transaction holds the write lock, so the order rows are written in
    does not matter). PostgreSQL: one per counter in key order, so every hold locks rows in the same order
    (no deadlocks between holds), stopping at the first refusal."""
    if not caps:
        return {}
    if db.dialect.name == "sqlite":
        params = _bulk_params(caps, k_micros=micros)
        params.update({f"k_cap{i}": cap for i, cap in enumerate(caps.values())})
        return _by_key(caps, run(db, _bulk("add", len(caps)), params))
    raised = {}
    for key, cap in sorted(caps.items()):
        value = _one(run(db, _ADD, _params(key, k_micros=micros, k_cap=cap)))
        if value is None:
            break
        raised[key] = int(value[0])
    return raised


def move_counters(
    db: Connection, keys: Sequence[CounterKey], *, used_delta: int, held_delta: int
) -> dict[CounterKey, int]:
    """Apply a settlement or a release to the counters the hold raised; the new value of each (0 when the
    counter is not there). One statement on SQLite, one per counter in key order on PostgreSQL."""
    if not keys:
        return {}
    if db.dialect.name == "sqlite":
        params = _bulk_params(keys, k_used=used_delta, k_held=held_delta)
        found = _by_key(keys, run(db, _bulk("move", len(keys)), params))
        return {key: found.get(key, 0) for key in keys}
    moved = {key: _one(run(db, _MOVE, _params(key, k_used=used_delta, k_held=held_delta))) for key in sorted(keys)}
    return {key: 0 if value is None else int(value[0]) for key, value in moved.items()}


def _bulk(kind: str, count: int) -> UpdateBase:
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


def counter(db: Connection, key: CounterKey) -> int | None:
    """What the counter ``key`` holds, or None when it was never created."""
    found = _one(run(db, _GET, _params(key)))
    return None if found is None else int(found[0])


def used(db: Connection, keys: Iterable[CounterKey]) -> dict[CounterKey, int]:
    """What each counter holds now; a counter never written counts 0."""
    return {key: counter(db, key) or 0 for key in keys}


# --- overrides and alerts ------------------------------------------------------------------------------


def override_rows(db: Connection) -> tuple[OverrideRow, ...]:
    """The operators' overrides as plain rows, oldest first: one small query, cheap enough for every hold."""
    return tuple(cast(OverrideRow, row) for row in run(db, _OVERRIDES_IN_ORDER))


def budgets_of(rows: Sequence[OverrideRow]) -> list[Budget]:
    return [
        Budget(cast(Scope, scope), target, cast(Window, window), cap, alert, cast(Action, action), "override")
        for scope, target, window, cap, alert, action in rows
    ]


def overrides(db: Connection | Session) -> list[Budget]:
    """The operators' overrides as budgets (``db``: a connection, or a session and its transaction)."""
    return budgets_of(override_rows(db.connection() if isinstance(db, Session) else db))


def upsert_override(db: Connection, *, budget: Budget, now: datetime) -> None:
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


def delete_override(db: Connection, *, scope: str, target: str, window: str) -> None:
    """Remove the operator's override (scope, target, window); NotFound when there is none. The fleet file's
    budget for the same key, if any, is in force again from the next hold. ``budget remove`` and the API's
    ``DELETE /api/admin/budgets`` both call this."""
    where = (_O.scope == scope, _O.target == target, _O.window == window)
    if not cast(CursorResult[Any], db.execute(_OVERRIDES.delete().where(*where))).rowcount:
        raise NotFound(
            f"no budget set for scope {scope!r}, target {target!r}, window {window!r}; "
            "`switchyard budget list` shows them (source 'override')"
        )


def record_alert(
    db: Connection, key: CounterKey, *, budget: Budget, used_micros: int, task_id: str, now: datetime
) -> bool:
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


def alerts(db: Connection, *, since: datetime | None = None) -> list[Alert]:
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
    charged_micros: int = 0
    price_version: str | None = None


_ROW = (
    *(_S.id, _S.state, _S.held_micros, _S.provider, _S.model, _S.group, _S.environment, _S.stage, _S.budget_keys),
    *(_S.charged_micros, _S.price_version),
)
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


def _one(rows: list[tuple[Any, ...]]) -> tuple[Any, ...] | None:
    """The one row a statement on a unique key answers, or None."""
    if len(rows) > 1:
        raise MultipleResultsFound(f"{len(rows)} rows where one was expected")
    return rows[0] if rows else None


def _spend_row(found: Any) -> SpendRow | None:
    return None if found is None else SpendRow(*found)


def locked_spend(db: Connection, *, task_id: str, attempt: int) -> SpendRow | None:
    """The spend row of (task, attempt), locked until the transaction ends (PostgreSQL; SQLite holds its
    write lock already)."""
    return _spend_row(_one(run(db, _LOCKED_SPEND, {"k_task": task_id, "k_attempt": attempt})))


@dataclass(frozen=True)
class Ending:
    """How a hold ends: ``settled`` at the real cost, or ``released`` (charged 0)."""

    state: str
    charged_micros: int
    at: datetime
    price_version: str | None = None


def end_held(db: Connection, *, task_id: str, attempt: int, ending: Ending) -> SpendRow | None:
    """Move the hold of (task, attempt) from ``held`` to ``ending`` in one statement; the row as it was held,
    or None when there is no hold still held (none at all, settled or released)."""
    params = {"k_task": task_id, "k_attempt": attempt, "k_state": ending.state, "k_charged": ending.charged_micros}
    return _spend_row(_one(run(db, _END_HELD, {**params, "k_at": ending.at, "k_version": ending.price_version})))


def insert_hold(db: Connection, *, row: dict[str, Any]) -> bool:
    """Insert a ``held`` spend row; False when (task, attempt) has one already (a racing twin won)."""
    values = {**row, "state": "held", "charged_micros": 0}
    return len(run(db, _insert(db.dialect.name, _SPEND), values, columns=tuple(sorted(values)))) == 1


def set_spend(db: Connection, spend_id: int, **values: Any) -> None:
    db.execute(update(_SPEND).where(_S.id == spend_id).values(**values))


def stale_holds(db: Connection, *, created_before: datetime, now: datetime) -> list[tuple[str, int]]:
    """(task, attempt) of holds still ``held`` whose task ended or whose task's lease ran out before ``now``
    (its worker died: store/leases.py); of a task that never had a lease, older than ``created_before``."""
    tasks = cast(Table, Task.__table__)
    lease = tasks.c.lease_until
    statement = (
        select(_S.task_id, _S.attempt)
        .join(tasks, tasks.c.id == _S.task_id)
        .where(_S.state == "held")
        .where(
            or_(
                tasks.c.status.in_(TERMINAL_STATUSES),
                and_(lease.is_not(None), lease < as_utc(now)),
                and_(lease.is_(None), _S.created_at < as_utc(created_before)),
            )
        )
        .order_by(_S.created_at)
    )
    return [(task_id, attempt) for task_id, attempt in db.execute(statement)]


def calls_of(
    db: Connection, holds: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], tuple[str, bool, int, str | None]]:
    """The attempt rows of ``holds`` (task, attempt): status, whether an answer is stored, its cost and price
    version. A hold with no attempt row is left out (its call never began)."""
    if not holds:
        return {}
    attempts = cast(Table, Attempt.__table__).c
    columns = (attempts.task_id, attempts.attempt, attempts.status, attempts.answer.is_not(None))
    statement = select(*columns, attempts.cost_micros, attempts.price_version)
    statement = statement.where(attempts.task_id.in_(sorted({task_id for task_id, _ in holds})))
    wanted = set(holds)
    return {
        (task_id, number): (status, bool(answered), int(cost or 0), version)
        for task_id, number, status, answered, cost, version in db.execute(statement)
        if (task_id, number) in wanted
    }
