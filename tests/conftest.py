"""Shared fixtures. Services a test needs but cannot reach fail the test in CI (CI=true) and skip elsewhere."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from ops.pgcluster import PrivatePostgres, available
from simulator.server import BackgroundSimulator
from switchyard.fleet import SimulatorProviderConfig

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# Settings overrides so a test never reaches a real provider, whatever keys the machine's environment holds.
NO_PROVIDER_KEYS: dict[str, None] = dict.fromkeys(
    ("anthropic_api_key", "openai_api_key", "anthropic_base_url", "openai_base_url", "ollama_host")
)


def load_factor() -> float:
    """How many times slower than an idle machine this one is likely to be now: the 1-minute load average
    per core, at least 1 (an idle or lightly used machine keeps the waits as written) and at most 8 (as
    ``up``'s readiness wait), so that a wait still ends within pytest's timeout."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return 1.0
    return min(8.0, max(1.0, load / (os.cpu_count() or 1)))


def patient(seconds: float) -> float:
    """``seconds`` stretched by :func:`load_factor`, for a wait for something to happen (a process to start, a
    thread to end): 20 s on an idle machine, 150 s at a load average of 15 on two cores. Never for a time that
    is itself the behaviour under test."""
    return seconds * load_factor()


def wait_until(what: str, check: Callable[[], bool], seconds: float, interval: float = 0.02) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``seconds`` stretched by the load, re-read
    while waiting (the deadline only grows when the machine gets busier during the wait)."""
    start = time.monotonic()
    factor = load_factor()
    while not check():
        factor = max(factor, load_factor())
        waited = time.monotonic() - start
        assert waited < seconds * factor, f"timed out waiting for {what} ({waited:.1f} s, load factor {factor:.1f})"
        time.sleep(interval)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Fail in CI, skip elsewhere, when ``name`` does not answer on host:port."""
    if port_open(host, port):
        return
    message = f"{name} is not answering on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}; CI must start it (see .ci/run)")
    pytest.skip(f"{message}; start it to run this test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Processes:
    """Processes a test started; every one is stopped (by its process group) when the test ends."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def spawn(self, args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        proc: subprocess.Popen[bytes] = subprocess.Popen(args, start_new_session=True, **kwargs)  # type: ignore[call-overload]
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            stop_process_group(proc.pid)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def stop_process_group(pid: int, timeout: float = 10.0) -> None:
    """TERM the group led by ``pid``, then KILL whatever is left after ``timeout``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap our own child, or killpg keeps finding its zombie
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.stop_all()


DEFAULT_REDIS_DBS = (9, 12, 13, 14, 15)


class SharedServices(BaseSettings):
    """Where the tests find the machine's shared servers, and which parts of them they may use, so that several
    checkouts (or other users) share one machine politely. Environment variables ``SWITCHYARD_TEST_*``:

    - ``REDIS_HOST`` (127.0.0.1), ``REDIS_PORT`` (6379);
    - ``REDIS_DBS``: the five Redis databases the tests flush, comma-separated (default ``9,12,13,14,15``),
      in place of 9, 12, 13, 14 and 15 in that order;
    - ``POSTGRES_URL``: the maintenance database the tests connect to to create and drop theirs
      (``postgresql://postgres@127.0.0.1:5432/postgres``; the user needs CREATEDB);
    - ``POSTGRES_PREFIX``: the start of every database name the tests create (``switchyard_test_``).
    """

    model_config = SettingsConfigDict(env_prefix="SWITCHYARD_TEST_", extra="ignore", env_ignore_empty=True)

    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_dbs: str = ",".join(map(str, DEFAULT_REDIS_DBS))
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    postgres_prefix: str = "switchyard_test_"

    def redis_db(self, default: int) -> int:
        """The database to use where the suite's default is ``default`` (one of DEFAULT_REDIS_DBS)."""
        chosen = [int(part) for part in self.redis_dbs.split(",") if part.strip()]
        if len(chosen) != len(DEFAULT_REDIS_DBS) or len(set(chosen)) != len(chosen):
            raise pytest.UsageError(
                f"SWITCHYARD_TEST_REDIS_DBS={self.redis_dbs!r}: give {len(DEFAULT_REDIS_DBS)} different database "
                f"numbers, in place of {','.join(map(str, DEFAULT_REDIS_DBS))}"
            )
        return dict(zip(DEFAULT_REDIS_DBS, chosen, strict=True))[default]


SERVICES = SharedServices()
REDIS_HOST = SERVICES.redis_host
REDIS_PORT = SERVICES.redis_port


def flushed_redis(db: int) -> str:
    """The machine's Redis (``SWITCHYARD_TEST_REDIS_HOST``/``_PORT``), the database that stands for ``db`` (one
    of 9, 12, 13, 14, 15; ``SWITCHYARD_TEST_REDIS_DBS`` moves them), flushed."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    import redis

    number = SERVICES.redis_db(db)
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
    client.flushdb()
    client.close()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{number}"


def postgres_admin() -> tuple[str, str, int]:
    """The maintenance URL (for psycopg), its host and port."""
    url = make_url(SERVICES.postgres_url)
    return url.render_as_string(hide_password=False), url.host or "127.0.0.1", url.port or 5432


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database named ``<SWITCHYARD_TEST_POSTGRES_PREFIX><random>``, dropped afterwards."""
    admin, host, port = postgres_admin()
    require_service("PostgreSQL", host, port)
    import psycopg

    name = f"{SERVICES.postgres_prefix}{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    finally:
        from store.db import dispose_all

        dispose_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> str:
    return flushed_redis(15)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'switchyard.db'}"


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundSimulator]:
    """The provider simulator on a thread of this process, with no added latency, for one test module."""
    fast = {name: SimulatorProviderConfig(latency_ms=0) for name in ("claude", "codex", "ollama")}
    with BackgroundSimulator(fast) as sim:
        yield sim


@pytest.fixture
def sim(server: BackgroundSimulator) -> Iterator[httpx.Client]:
    """A client of the simulator's control endpoints, with faults and counters reset first."""
    with httpx.Client(base_url=server.url, timeout=5) as client:
        client.post("/_sim/reset").raise_for_status()
        yield client


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of the test's own (ops/pgcluster.py), which a test may stop and start; closed after.
    Fails in CI (skips elsewhere) when the machine's PostgreSQL server packages are missing."""
    from store.db import dispose_all

    if not available():
        message = "PostgreSQL's initdb and pg_ctl are not installed (/usr/lib/postgresql/*/bin)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    cluster = PrivatePostgres()
    try:
        cluster.start()
        yield cluster
    finally:
        dispose_all()
        cluster.close()
