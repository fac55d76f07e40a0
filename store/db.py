"""Engines and sessions, created per process (after fork), never at import.

SQLite runs in WAL mode with a busy timeout so the worker threads and the CLI can share one file. The file
holds every prompt and answer, so it and its WAL and shared-memory files are made 0600 (SQLite gives the WAL
and SHM files the database file's mode when it creates them), and a directory created for it is 0700.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
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


def _private_sqlite_file(path: Path) -> None:
    """Create the database file 0600 (its directory 0700 when we create it); make an existing one and its
    WAL and SHM files 0600."""
    if not path.parent.exists():
        private_dir(path.parent)
    private_file(path)
    for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with suppress(FileNotFoundError):
            side.chmod(FILE_MODE)


def make_engine(url: str) -> Engine:
    """A new engine for ``url``; SQLite files get their directory created and WAL switched on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_sqlite_file(Path(parsed.database))
        registry.register(f"sqlite.{IMMEDIATE_DRIVER}", __name__, ImmediateSQLiteDialect.__name__)
        immediate = parsed.set(drivername=f"sqlite+{IMMEDIATE_DRIVER}")
        engine = create_engine(immediate, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
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
