"""Health checks for the status API: real connections with short timeouts, answers instead of tracebacks.

Each check returns ``{"ok": bool, ...}``; a failing check names the error class and a message with any
password removed. Nothing here raises.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import redis
from kombu.connection import Connection
from sqlalchemy import inspect, text
from sqlalchemy.exc import SQLAlchemyError

from store.db import get_engine
from switchyard.settings import PRODUCTION_HEALTH, HealthThresholds
from web.deps import redact_url

REDIS_SCHEMES = ("redis://", "rediss://", "valkey://", "valkeys://", "unix://")
Check = dict[str, Any]


def _failure(exc: BaseException, url: str, started: float) -> Check:
    message = str(exc).splitlines()[0] if str(exc) else ""
    password = _password(url)
    if password:
        message = message.replace(password, "***")
    return {"ok": False, "error": f"{type(exc).__name__}: {message}"[:300], "latency_ms": _ms(started)}


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:  # an unparseable URL has no password we could find, and none we would show
        return None


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def check_database(url: str) -> Check:
    """Connect, ``SELECT 1``, and look for the ``tasks`` table (missing: run ``switchyard db upgrade``)."""
    started = time.perf_counter()
    target = redact_url(url)
    try:
        engine = get_engine(url)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            schema = inspect(connection).has_table("tasks")
    except SQLAlchemyError as exc:
        return {"target": target, **_failure(exc, url, started)}
    check: Check = {"ok": schema, "target": target, "schema": schema, "latency_ms": _ms(started)}
    if not schema:
        check["error"] = "the tables are missing; run `switchyard db upgrade`"
    return check


def check_broker(url: str, *, timeout: float = 1.0) -> Check:
    """PING a Redis/Valkey broker, or open and close an AMQP connection, within ``timeout`` seconds."""
    started = time.perf_counter()
    target = redact_url(url)
    try:
        if url.startswith(REDIS_SCHEMES):
            _ping_redis(url, timeout)
        else:
            _open_amqp(url, timeout)
    except Exception as exc:  # noqa: BLE001 - a health check reports every failure instead of raising it
        return {"target": target, **_failure(exc, url, started)}
    return {"ok": True, "target": target, "latency_ms": _ms(started)}


def _ping_redis(url: str, timeout: float) -> None:
    url = url.replace("valkey://", "redis://", 1).replace("valkeys://", "rediss://", 1)
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()


def _open_amqp(url: str, timeout: float) -> None:
    # kombu's Connection methods are unannotated; max_retries=0 gives up after the first failed try.
    connection = Connection(url, connect_timeout=timeout)  # type: ignore[no-untyped-call]
    with connection:
        connection.ensure_connection(max_retries=0)  # type: ignore[no-untyped-call]


def health(database_url: str, broker_url: str, thresholds: HealthThresholds = PRODUCTION_HEALTH) -> Check:
    """Both checks within the profile's ``thresholds``; a check slower than ``slow_ms`` is marked slow."""
    checks = {
        "database": check_database(database_url),
        "broker": check_broker(broker_url, timeout=thresholds.probe_timeout_s),
    }
    for check in checks.values():
        check["slow"] = check["latency_ms"] > thresholds.slow_ms
    return {"ok": all(check["ok"] for check in checks.values()), "slow_ms": thresholds.slow_ms, "checks": checks}
