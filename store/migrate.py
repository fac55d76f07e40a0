"""Schema migrations run from Python: no ``alembic.ini``, any working directory, an installed package.

    upgrade(url, revision="head")   run the migrations up to ``revision`` (a no-op when already there)
    current(url)                    the revision the database is at; None when it was never migrated
    head()                          the newest revision the code knows
    ensure_schema(url)              upgrade to head; safe when several processes start at once
    make_revision(url, message)     autogenerate the next revision file from :mod:`store.models`

Several processes may migrate at once (every worker calls :func:`ensure_schema` at start): on SQLite a file
lock next to the database file serializes them, on PostgreSQL a transaction-scoped advisory lock does (it is
released at commit, or by the server when the connection drops). The loser of the race finds the schema at
head and does nothing.

The URL never reaches Alembic's config or logs: this module opens the connection itself and hands it to
``migrations/env.py``; errors name the database with the password masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from store.db import make_engine
from switchyard.errors import ServiceUnavailable
from switchyard.private import FILE_MODE

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock key: any constant bigint that no other part of Switchyard uses ("Swyd" in ASCII).
PG_LOCK_KEY = 0x53_77_79_64
LOCK_TIMEOUT_S = 300.0


def alembic_config() -> Config:
    """Alembic's config, built in code: the scripts live beside this module, wherever it is installed."""
    from alembic.config import Config  # noqa: PLC0415 -- Alembic only when a migration runs (see ensure_schema)

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head() -> str:
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if revision is None:  # only possible if the versions folder were emptied
        raise RuntimeError(f"no migrations found in {MIGRATIONS / 'versions'}")
    return revision


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def _file_lock(url: str) -> AbstractContextManager[object]:
    """A lock file beside a SQLite database; nothing for other databases or an in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return nullcontext()
    return FileLock(f"{parsed.database}.migrate.lock", timeout=LOCK_TIMEOUT_S, mode=FILE_MODE)


@contextmanager
def _migration_connection(url: str) -> Iterator[Connection]:
    """One connection in one transaction, holding the migration lock; committed when the block ends."""
    engine = make_engine(url)
    try:
        with _file_lock(url), _connect(engine, url) as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
            elif conn.dialect.name == "sqlite":
                # Batch migrations copy and drop tables; with foreign keys on, a DROP would cascade deletes.
                # pysqlite has not begun a transaction yet here, so the pragma takes effect.
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            yield conn
    except Timeout as exc:
        message = f"another process held the migration lock {exc.lock_file} over {LOCK_TIMEOUT_S:.0f} s"
        raise ServiceUnavailable(message) from None
    finally:
        engine.dispose()


def _connect(engine: Engine, url: str) -> Connection:
    try:
        return engine.connect()
    except OperationalError as exc:
        raise ServiceUnavailable(f"cannot reach the database {masked(url)}: {exc.orig}") from None


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``; nothing happens when it is there already."""
    from alembic import command  # noqa: PLC0415

    with _migration_connection(url) as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate down to ``revision`` (``"base"`` drops every table). For development and tests."""
    from alembic import command  # noqa: PLC0415

    with _migration_connection(url) as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def current(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415

    engine = make_engine(url)
    try:
        with _connect(engine, url) as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def ensure_schema(url: str) -> None:
    """Bring the schema to head; idempotent, and safe to call from several processes at once. A database
    already at head is told by one query, without loading Alembic (every CLI command starts here)."""
    if at_head(url):
        return
    upgrade(url, "head")


_schema_ready: set[str] = set()


def ensure_schema_once(url: str) -> None:
    """:func:`ensure_schema` once per process and URL."""
    if url not in _schema_ready:
        ensure_schema(url)
        _schema_ready.add(url)


_REVISION = re.compile(r"^revision(?:\s*:\s*str)?\s*=\s*[\"']([^\"']+)[\"']", re.M)
_DOWN = re.compile(r"^down_revision(?:\s*:[^=]*)?=\s*(.+)$", re.M)


def quick_head() -> str | None:
    """The newest revision, read from the version files' ``revision``/``down_revision`` lines without Alembic;
    None when they do not name exactly one head plainly (then :func:`ensure_schema` asks Alembic)."""
    revisions: set[str] = set()
    downs: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(text), _DOWN.search(text)
        if revision is None or down is None:
            return None
        revisions.add(revision.group(1))
        downs.update(re.findall(r"[\"']([^\"']+)[\"']", down.group(1)))
    heads = revisions - downs
    return heads.pop() if len(heads) == 1 else None


def at_head(url: str) -> bool:
    """Whether the database at ``url`` is at :func:`quick_head` (False when it cannot tell: Alembic decides)."""
    wanted = quick_head()
    if wanted is None:
        return False
    # An engine of its own, disposed at once (as current() does), not the shared pool: with a pooled connection
    # that had asked a database without the table yet, the process later did not see rows another process
    # wrote (tests/test_door.py's installed-script test; seen on SQLite, cause not pinned down further).
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            found = [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
    except SQLAlchemyError:  # no table yet, or the database away: the full path says what is wrong
        return False
    finally:
        engine.dispose()
    return found == [wanted]


def make_revision(url: str, message: str) -> Path:
    """Write the next revision (``0002_<message>.py``, ...) from the difference between the models and the
    database at ``url``, which must be at head. Read and fix the file before committing it."""
    from alembic import command  # noqa: PLC0415
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    with _migration_connection(url) as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        number = len(list(ScriptDirectory.from_config(config).walk_revisions())) + 1
        script = command.revision(config, message, autogenerate=True, rev_id=f"{number:04d}")
    if script is None or isinstance(script, list):
        raise RuntimeError("alembic wrote no single revision file")
    return Path(script.path)
