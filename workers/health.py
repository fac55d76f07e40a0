"""Health of the parts a fleet needs: broker, database, workers per group, queue depths.

Every check returns data or a problem sentence; none raises for a service that is merely down, so the
CLI, the status API and the launcher can show all problems at once. URLs in messages are sanitized.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from kombu.connection import Connection
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

import celeryconfig
from switchyard.fleet import Fleet
from switchyard.settings import Settings

REDIS_SCHEMES = ("redis://", "rediss://", "valkey://", "unix://")
# Kombu's Redis transport keeps a queue's messages in one list per priority step: the queue's own name for
# step 0 and "<queue>\x06\x16<step>" for the others. These are kombu's key names, not Switchyard's.
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)
KOMBU_PRIORITY_SEP = "\x06\x16"


def _safe(url: str) -> str:
    return str(maybe_sanitize_url(url))


def _redis_client(url: str, timeout: float) -> redis.Redis:
    if url.startswith("valkey://"):
        url = "redis://" + url.removeprefix("valkey://")
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def broker_ok(url: str, *, timeout: float = 2.0) -> str | None:
    """None when the broker at ``url`` answers, else a sentence saying which broker and why not."""
    if not url.startswith(REDIS_SCHEMES):
        return _amqp_ok(url, timeout)
    try:
        with _redis_client(url, timeout) as client:
            client.ping()
    except (redis.RedisError, OSError) as exc:
        return f"broker {_safe(url)} is not answering: {type(exc).__name__}: {exc}"
    return None


def _amqp_ok(url: str, timeout: float) -> str | None:
    with _kombu(url, timeout) as conn:
        try:
            conn.ensure_connection(max_retries=1)
        except (OperationalError, OSError, *conn.connection_errors, *conn.channel_errors) as exc:
            return f"broker {_safe(url)} is not answering: {type(exc).__name__}: {exc}"
    return None


def database_ok(url: str) -> str | None:
    """None when ``SELECT 1`` works on ``url``; a missing SQLite file is reported, not created."""
    parsed = make_url(url)
    if _missing_sqlite_file(parsed.get_backend_name(), parsed.database):
        return f"database file {parsed.database} does not exist; run `switchyard db upgrade`"
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        where = parsed.render_as_string(hide_password=True)
        return f"database {where} is not answering: {type(exc).__name__}: {_first_line(exc)}"
    finally:
        engine.dispose()
    return None


def _missing_sqlite_file(backend: str, database: str | None) -> bool:
    return backend == "sqlite" and database not in (None, "", ":memory:") and not Path(str(database)).exists()


def _first_line(exc: BaseException) -> str:
    """The driver's first line only: later lines can quote the statement or connection parameters."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""


def control_app(settings: Settings, fleet: Fleet) -> Celery:
    """A Celery app configured for ``settings``'s broker, for inspection only (not the process-wide app)."""
    app = Celery("switchyard-control", set_as_current=False)
    app.config_from_object(celeryconfig.build(settings, fleet))
    return app


def workers_by_group(
    app: Celery, fleet: Fleet, timeout: float = 1.0, *, expect: int | None = None
) -> dict[str, list[str]]:
    """The worker nodes that answered, by the group whose queue they consume; every group is a key.

    The broadcast waits ``timeout`` for replies, since it cannot know who will answer. When the caller knows
    every worker there is (``expect`` of them: a local fleet on its embedded broker), it ends as soon as that
    many have answered; a worker that is down still costs the whole ``timeout``."""
    inspect = app.control.inspect(timeout=timeout, limit=expect if expect else None)
    replies: dict[str, list[dict[str, Any]]] = inspect.active_queues() or {}
    by_queue: dict[str, list[str]] = {}
    for node, queues in replies.items():
        for queue in queues or []:
            by_queue.setdefault(str(queue.get("name")), []).append(node)
    return {group.name: sorted(by_queue.get(group.queue, [])) for group in fleet.groups}


def ping_nodes(app: Celery, nodes: list[str], timeout: float = 1.0) -> set[str]:
    """The nodes among ``nodes`` that answered a Celery ping."""
    replies: list[dict[str, Any]] = app.control.ping(destination=nodes, timeout=timeout) or []
    return {node for reply in replies for node in reply}


def queue_depths(broker_url: str, fleet: Fleet) -> dict[str, int]:
    """Messages waiting in each group's queue (not those reserved by a worker), by group name."""
    queues = {group.name: group.queue for group in fleet.groups}
    if broker_url.startswith(REDIS_SCHEMES):
        return _redis_depths(broker_url, queues)
    return _amqp_depths(broker_url, queues)


def _redis_keys(queue: str) -> list[str]:
    return [queue if step == 0 else f"{queue}{KOMBU_PRIORITY_SEP}{step}" for step in KOMBU_PRIORITY_STEPS]


def _redis_depths(url: str, queues: dict[str, str]) -> dict[str, int]:
    with _redis_client(url, 2.0) as client, client.pipeline(transaction=False) as pipe:
        for queue in queues.values():
            for key in _redis_keys(queue):
                pipe.llen(key)
        counts = [int(n) for n in pipe.execute()]
    steps = len(KOMBU_PRIORITY_STEPS)
    return {group: sum(counts[i * steps : (i + 1) * steps]) for i, group in enumerate(queues)}


def _amqp_depths(url: str, queues: dict[str, str]) -> dict[str, int]:
    depths: dict[str, int] = {}
    with _kombu(url, 2.0) as conn:
        for group, queue in queues.items():
            depths[group] = _amqp_depth(conn, queue)
    return depths


def _kombu(url: str, timeout: float) -> Any:
    """A kombu connection (kombu's constructor is unannotated, hence Any)."""
    return Connection(url, connect_timeout=timeout)


def _amqp_depth(conn: Any, queue: str) -> int:
    """A passive declare reads the count without creating the queue; a missing queue holds nothing."""
    channel = conn.channel()
    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except conn.channel_errors:
        return 0
    finally:
        with contextlib.suppress(*conn.channel_errors, *conn.connection_errors):
            channel.close()
