"""A PostgreSQL cluster of one's own, to stop and start (an outage) without touching a shared one: the chaos
suite's ``postgres_stop`` fault (``python -m ops.chaos --private-postgres``) and the tests use it.

    pg = PrivatePostgres(tmp_dir)
    pg.start()                   # initdb on the first start, then pg_ctl start; waits until it answers
    url = pg.database("name")    # a new database in it, as a SQLAlchemy URL
    pg.stop()                    # pg_ctl stop -m fast: open connections are cut, new ones refused
    pg.start()                   # the same data back
    pg.close()                   # stopped, data directory removed

It runs initdb, pg_ctl and postgres from the newest ``/usr/lib/postgresql/*/bin`` (or ``PATH``), on a free
port of 127.0.0.1, with trust auth for ``postgres`` and its socket in the data directory. PostgreSQL refuses
to run as root, so as root the commands run as the ``postgres`` user (``runuser -u postgres --``), which owns
the data directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

START_TIMEOUT_S = 300  # pg_ctl -w waits at most this long; a loaded machine is slow to start a cluster


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pg_bin(name: str) -> str | None:
    """The PostgreSQL program ``name`` from the newest installed version, else from PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4] or 0))
    return found[-1] if found else shutil.which(name)


def available() -> bool:
    return all(pg_bin(name) for name in ("initdb", "pg_ctl", "postgres"))


class PrivatePostgres:
    """One private cluster in a fresh directory under ``parent`` (a temporary directory by default)."""

    def __init__(self, parent: Path | None = None, *, port: int | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="switchyard-pg-", dir=parent))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = port or free_port()
        self.started = False

    @property
    def url(self) -> str:
        """The cluster's ``postgres`` database, as a SQLAlchemy URL."""
        return self.url_of("postgres")

    def url_of(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        if not self.data.exists():
            self._initdb()
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            ["pg_ctl", "start", "-w", "-t", str(START_TIMEOUT_S), "-D", str(self.data), "-l", str(self.log)], options
        )
        self.started = True

    def stop(self) -> None:
        self._run(["pg_ctl", "stop", "-w", "-t", str(START_TIMEOUT_S), "-m", "fast", "-D", str(self.data)])
        self.started = False

    def database(self, name: str) -> str:
        """Create database ``name`` (the cluster must be running); its URL."""
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_of(name)

    def close(self) -> None:
        if self.started:
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _initdb(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(["initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])

    def _run(self, args: list[str], options: str | None = None) -> None:
        program = pg_bin(args[0])
        if program is None:
            raise RuntimeError(f"{args[0]} not found under /usr/lib/postgresql/*/bin or on PATH")
        command = [program, *args[1:]] + (["-o", options] if options else [])
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=self.root)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise subprocess.CalledProcessError(done.returncode, command, done.stdout, done.stderr + log)
