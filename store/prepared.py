"""Core statements run straight on the driver's cursor: the budget ledger's hot path.

Every hold and settle runs a few small statements in one transaction. On SQLite, SQLAlchemy's work around
each execution (an execution context, events, parameter and result objects) costs two to three times what
SQLite takes to run them. A :class:`Prepared` statement is a Core statement compiled once per dialect by
SQLAlchemy itself, so the SQL is exactly what ``Connection.execute`` would send; its parameters and results go
through the same type processors SQLAlchemy would apply (dates as SQLite stores them, JSON); only the call
is made on the DBAPI cursor of the connection's own transaction. Driver errors are wrapped as SQLAlchemy
wraps them (:class:`~sqlalchemy.exc.IntegrityError`, :class:`~sqlalchemy.exc.OperationalError`, …), so
callers catch the same classes, and the transaction still commits or rolls back through the connection.

Meant for plain statements: bound parameters only (no expanding ``IN``, no defaults computed at run time:
every value an INSERT binds is passed), rows read as tuples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from store.db import note_statement

Processor = Callable[[Any], Any]
_CACHE: dict[tuple[int, type[Dialect], tuple[str, ...]], tuple[ClauseElement, Prepared]] = {}


@dataclass(frozen=True)
class Prepared:
    """One statement compiled for one dialect, with what it takes to run it on the driver."""

    sql: str
    order: tuple[str, ...]  # the parameters in the order a positional driver takes them (names may repeat)
    positional: bool
    constants: Mapping[str, Any]  # values bound in the statement itself (``state == 'held'``)
    binds: tuple[tuple[str, Processor], ...]  # the parameters whose type converts them for the driver
    results: tuple[Processor | None, ...]  # per column of the rows, its type's conversion (or None)


def prepare(statement: ClauseElement, dialect: Dialect, columns: Sequence[str] = ()) -> Prepared:
    """``statement`` compiled for ``dialect``, once (``columns``: the values an INSERT is given)."""
    key = (id(statement), type(dialect), tuple(columns))
    found = _CACHE.get(key)
    if found is not None and found[0] is statement:
        return found[1]
    compiled = statement.compile(dialect=dialect, column_keys=list(columns) or None)
    if not isinstance(compiled, SQLCompiler):
        raise TypeError(f"not a SQL statement: {statement!r}")
    params = {name: bind for bind, name in compiled.bind_names.items()}
    if any(bind.expanding or bind.literal_execute for bind in params.values()):
        raise NotImplementedError("prepared statements take plain bound parameters only")
    processors = ((name, bind.type.dialect_impl(dialect).bind_processor(dialect)) for name, bind in params.items())
    results = getattr(statement, "exported_columns", ())
    prepared = Prepared(
        sql=compiled.string,
        order=tuple(compiled.positiontup or params),
        positional=dialect.positional,
        constants={name: bind.effective_value for name, bind in params.items() if not bind.required},
        binds=tuple((name, processor) for name, processor in processors if processor is not None),
        results=tuple(column.type.dialect_impl(dialect).result_processor(dialect, None) for column in results),
    )
    if len(_CACHE) >= 256:  # one entry per statement and dialect; many only when engines of many kinds come and go
        _CACHE.clear()
    _CACHE[key] = (statement, prepared)
    return prepared


def run(
    conn: Connection, statement: ClauseElement, params: Mapping[str, Any] | None = None, *, columns: Sequence[str] = ()
) -> list[tuple[Any, ...]]:
    """Run ``statement`` with ``params`` in ``conn``'s transaction; its rows (none for a statement without)."""
    prepared = prepare(statement, conn.dialect, columns)
    values = {**prepared.constants, **(params or {})}
    for name, processor in prepared.binds:
        values[name] = processor(values[name])
    args: Sequence[Any] | Mapping[str, Any]
    if prepared.positional:
        args = [values[name] for name in prepared.order]
    else:
        args = {name: values[name] for name in prepared.order}
    return _rows(prepared, _execute(conn, prepared.sql, args))


def _execute(conn: Connection, sql: str, args: Sequence[Any] | Mapping[str, Any]) -> list[Any]:
    dbapi = conn.dialect.loaded_dbapi
    note_statement(conn, sql)  # past SQLAlchemy's events: the transaction counter sees it here
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, args)
        return list(cursor.fetchall()) if cursor.description is not None else []
    except dbapi.Error as exc:
        # as Connection.execute would: a lost connection is invalidated (and the error says so)
        lost = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(sql, args, exc, dbapi.Error, connection_invalidated=lost) from exc
    finally:
        with suppress(dbapi.Error):  # a lost connection cannot close its cursor either
            cursor.close()


def _rows(prepared: Prepared, rows: list[Any]) -> list[tuple[Any, ...]]:
    if not any(prepared.results):
        return [tuple(row) for row in rows]
    converts = prepared.results
    return [tuple(v if c is None else c(v) for c, v in zip(converts, row, strict=True)) for row in rows]
