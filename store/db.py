"""Engines and sessions, created per process (after fork), never at import.

SQLite runs in WAL mode with a busy timeout so the worker threads and the CLI can share one file. The file
holds every prompt and answer, so it and its WAL and shared-memory files are made 0600 (SQLite gives the WAL
and SHM files the database file's mode when it creates them), and a directory created for it is 0700.
"""

from __future__ import annotations

import atexit
import json
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, PoolProxiedConnection, create_engine, event
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from switchyard.fleet_models import DB_KEPT_MAX, DB_MAX_OVERFLOW, DB_POOL_SIZE
from switchyard.private import FILE_MODE, private_dir, private_file

_engines: dict[tuple[int, str], Engine] = {}
_engines_lock = threading.RLock()
# (pid, url) -> the connection each thread keeps (see held_connection), at most KEEP_MAX per process and URL:
# a worker's threads (compose runs at most 6 per pool) with room to spare in the engine's pool
KEEP_MAX = DB_KEPT_MAX
_kept: dict[tuple[int, str], dict[threading.Thread, Connection]] = {}
_kept_lock = threading.Lock()
IMMEDIATE_DRIVER = "switchyard"  # SQLite URLs are opened as sqlite+switchyard: ImmediateSQLiteDialect
READ_DRIVER = "switchyardread"  # read-only transactions on SQLite: DeferredSQLiteDialect, no write lock
COUNT_FILE_VARIABLE = "SWITCHYARD_TXN_COUNT_FILE"  # set: this process counts its transactions into that file


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINTs; the dialect emits BEGIN itself (ImmediateSQLiteDialect).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class ImmediateSQLiteDialect(SQLiteDialect_pysqlite):
    """pysqlite whose transactions start with ``BEGIN IMMEDIATE``.

    IMMEDIATE takes the write lock at BEGIN, so busy_timeout applies; a deferred transaction that reads and
    then writes fails at once with SQLITE_BUSY in WAL mode when another writer committed in between. It is
    sent here, where SQLAlchemy begins a transaction and wraps the driver's errors, rather than from a
    ``begin`` event: an engine with connection events dispatches them around every statement, which costs
    more than the ledger's statements themselves.
    """

    supports_statement_cache = True

    def do_begin(self, dbapi_connection: PoolProxiedConnection) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
        finally:
            cursor.close()


class DeferredSQLiteDialect(SQLiteDialect_pysqlite):
    """pysqlite for read-only transactions: a plain (deferred) ``BEGIN`` takes no write lock, so readers never
    wait for a writer, nor a writer for them (WAL: a reader sees the snapshot of its first read). Its
    connections are ``PRAGMA query_only``: a write sent through one fails at once instead of racing for the
    lock a read-only transaction never took (see :func:`read_scope`)."""

    supports_statement_cache = True

    def do_begin(self, dbapi_connection: PoolProxiedConnection) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("BEGIN")
        finally:
            cursor.close()


def _sqlite_read_pragmas(dbapi_connection: sqlite3.Connection, record: Any) -> None:
    _sqlite_pragmas(dbapi_connection, record)
    dbapi_connection.execute("PRAGMA query_only=ON")


def _private_sqlite_file(path: Path) -> None:
    """Create the database file 0600 (its directory 0700 when we create it); make an existing one and its
    WAL and SHM files 0600."""
    if not path.parent.exists():
        private_dir(path.parent)
    private_file(path)
    for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with suppress(FileNotFoundError):
            side.chmod(FILE_MODE)


def make_engine(url: str, *, read: bool = False) -> Engine:
    """A new engine for ``url``; SQLite files get their directory created and WAL switched on. ``read``: an
    SQLite engine for read-only transactions (:class:`DeferredSQLiteDialect`)."""
    _count_from_environment()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_sqlite_file(Path(parsed.database))
        dialect = DeferredSQLiteDialect if read else ImmediateSQLiteDialect
        driver = READ_DRIVER if read else IMMEDIATE_DRIVER
        registry.register(f"sqlite.{driver}", __name__, dialect.__name__)
        engine = create_engine(
            parsed.set(drivername=f"sqlite+{driver}"), connect_args={"timeout": 30, "check_same_thread": False}
        )
        event.listen(engine, "connect", _sqlite_read_pragmas if read else _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False))
    return create_engine(url, pool_pre_ping=True, pool_size=DB_POOL_SIZE, max_overflow=DB_MAX_OVERFLOW)


def get_engine(url: str) -> Engine:
    """The engine of this process for ``url``: one per (pid, url), so a forked child never reuses its parent's."""
    key = (os.getpid(), url)
    engine = _engines.get(key)
    if engine is None:
        with _engines_lock:  # threads asking at once must get one engine, not one each (the last one wins)
            engine = _engines.get(key)
            if engine is None:
                engine = _engines[key] = make_engine(url)
    return engine


def get_read_engine(url: str) -> Engine:
    """The engine of this process for read-only transactions on ``url``: on SQLite one whose transactions
    take no write lock (a file of its own: an in-memory database is per connection, so it reads through the
    writing engine); elsewhere the writing engine itself."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return get_engine(url)
    key = (os.getpid(), f"read:{url}")
    engine = _engines.get(key)
    if engine is None:
        with _engines_lock:
            engine = _engines.get(key)
            if engine is None:
                engine = _engines[key] = make_engine(url, read=True)
    return engine


def held_connection(url: str) -> Connection | None:
    """The connection this thread keeps open for ``url``, for short transactions on a hot path (the budget
    ledger's holds and settles): no pool checkout, reset and pre-ping per transaction. None once
    :data:`KEEP_MAX` threads of this process keep one: the others use the pool, which stays the engine's.

    A worker's thread pool keeps its threads, so each keeps its connection; a thread that ended gives its
    connection back when the next one is kept. Made anew for a new engine (after fork, or after
    :func:`dispose_all`) or after :func:`drop_held`. A forked child never touches a connection its parent
    kept (they are keyed by pid): closing it would close the parent's socket too."""
    engine = get_engine(url)
    me = threading.current_thread()
    kept = _kept.get((os.getpid(), url))
    conn = None if kept is None else kept.get(me)
    if conn is not None and conn.engine is engine and not conn.closed and not conn.invalidated:
        return conn
    with _kept_lock:
        kept = _kept.setdefault((os.getpid(), url), {})
        for thread in [thread for thread in kept if thread is me or not thread.is_alive()]:
            _close(kept.pop(thread))
        if len(kept) >= KEEP_MAX:
            return None
        conn = kept[me] = engine.connect()
    return conn


def drop_held(url: str) -> None:
    """Close this thread's kept connection for ``url`` (it failed: the next transaction gets a new one)."""
    with _kept_lock:
        conn = _kept.get((os.getpid(), url), {}).pop(threading.current_thread(), None)
    if conn is not None:
        _close(conn)


def _close(conn: Connection) -> None:
    with suppress(SQLAlchemyError):
        conn.close()


def dispose_all() -> None:
    """Close every engine of this process, and the connections its threads kept (see held_connection)."""
    with _kept_lock:
        for key in [key for key in _kept if key[0] == os.getpid()]:
            for conn in _kept.pop(key).values():
                _close(conn)
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    factory = sessionmaker(bind=get_engine(url), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def session_on(conn: Connection) -> Iterator[Session]:
    """A session whose writes join ``conn``'s transaction (the ledger's): flushed at the end of the block and
    committed, or rolled back, with that transaction by its owner, never by the session."""
    session = Session(bind=conn, join_transaction_mode="rollback_only", expire_on_commit=False)
    try:
        yield session
        session.flush()
    finally:
        session.close()


@contextmanager
def read_scope(url: str) -> Iterator[Session]:
    """A session for reading only: on SQLite its transaction takes no write lock (:func:`get_read_engine`),
    so it neither waits for writers nor makes them wait. Nothing is committed; a write inside fails."""
    session = sessionmaker(bind=get_read_engine(url), expire_on_commit=False)()
    try:
        yield session
    finally:
        session.close()  # ends the transaction (the pool rolls it back) and keeps what was read loaded


# --- counting transactions (tests and bench/throughput.py) -----------------------------------------------------


@dataclass
class TxnCount:
    """The transactions this process ran while counting was on (:func:`count_transactions`)."""

    transactions: int = 0  # every one begun and ended
    writing: int = 0  # those that wrote (INSERT, UPDATE or DELETE)
    locked: int = 0  # those that took SQLite's write lock at BEGIN (BEGIN IMMEDIATE)
    first_writes: Counter[str] = field(default_factory=Counter)  # what each writing transaction wrote first
    locked_reads: Counter[str] = field(default_factory=Counter)  # what a locked transaction that wrote nothing read

    def as_dict(self) -> dict[str, Any]:
        return {
            "transactions": self.transactions,
            "writing": self.writing,
            "locked": self.locked,
            "first_writes": dict(self.first_writes),
            "locked_reads": dict(self.locked_reads),
        }


_counting: list[TxnCount] = []  # the count in progress, if any (at most one)
_count_lock = threading.Lock()
_STATE = "switchyard_txn"  # conn.info key: [took the write lock, first write or None, first statement or None]
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _on_begin(conn: Connection) -> None:
    conn.info[_STATE] = [isinstance(conn.dialect, ImmediateSQLiteDialect), None, None]


def _on_statement(conn: Connection, _cursor: Any, statement: str, *_: Any) -> None:
    state = conn.info.get(_STATE)
    if state is None or state[1] is not None:
        return
    words = statement.split()
    if state[2] is None:
        state[2] = " ".join(words[:6])[:80]
    if statement.lstrip().upper().startswith(WRITES):
        state[1] = " ".join(words[:3])[:60]


def note_statement(conn: Connection, statement: str) -> None:
    """A statement sent on the driver's cursor, past SQLAlchemy's events (:mod:`store.prepared`), counted."""
    if _counting:
        _on_statement(conn, None, statement)


def _on_end(conn: Connection) -> None:
    state = conn.info.pop(_STATE, None)
    if state is None or not _counting:
        return
    with _count_lock:
        count = _counting[0]
        count.transactions += 1
        count.locked += 1 if state[0] else 0
        if state[1] is not None:
            count.writing += 1
            count.first_writes[state[1]] += 1
        elif state[0]:
            count.locked_reads[state[2] or "(nothing)"] += 1


_EVENTS = (("begin", _on_begin), ("before_cursor_execute", _on_statement), ("commit", _on_end), ("rollback", _on_end))


def start_counting() -> TxnCount:
    """Count every transaction of this process from now on (engines made before are made anew: a connection
    takes the events it will run when it is made). Costs an event per statement: tests and benchmarks only."""
    with _count_lock:
        if not _counting:
            for name, fn in _EVENTS:
                event.listen(Engine, name, fn)
            _counting.append(TxnCount())
        count = _counting[0]
    dispose_all()
    return count


def stop_counting() -> TxnCount:
    """Stop counting; what was counted."""
    with _count_lock:
        count = _counting.pop() if _counting else TxnCount()
        for name, fn in _EVENTS:
            if event.contains(Engine, name, fn):
                event.remove(Engine, name, fn)
    dispose_all()
    return count


@contextmanager
def count_transactions() -> Iterator[TxnCount]:
    """The transactions run inside the block (this process, every thread)."""
    count = start_counting()
    try:
        yield count
    finally:
        stop_counting()


def _count_from_environment() -> None:
    """With ``SWITCHYARD_TXN_COUNT_FILE`` set, count from the first engine on and write the figures (JSON) to
    that path with ``.<pid>`` appended, every second and at exit (bench/throughput.py reads them)."""
    path = os.environ.get(COUNT_FILE_VARIABLE)
    if not path or _counting:
        return
    with _count_lock:
        if _counting:
            return
        for name, fn in _EVENTS:
            event.listen(Engine, name, fn)
        _counting.append(TxnCount())
    target = Path(f"{path}.{os.getpid()}")

    def write() -> None:
        with _count_lock:
            text = json.dumps(_counting[0].as_dict()) if _counting else None
        if text is not None:
            target.write_text(text)

    def every_second() -> None:
        while True:
            threading.Event().wait(1.0)
            write()

    threading.Thread(target=every_second, name="switchyard-txn-count", daemon=True).start()
    atexit.register(write)
