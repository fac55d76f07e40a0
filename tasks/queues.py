"""Which tasks have a message on the broker now: waiting on a queue, or reserved by a worker.

Only the Redis transport (Redis, Valkey, the embedded broker) can be looked into without taking messages:
kombu keeps each queue as lists (one per priority step) and every message a worker holds, unacknowledged
(running, prefetched, or waiting for its countdown), in the ``unacked`` hash until it is acknowledged. The
key names come from kombu's own channel, never from here. With another transport (RabbitMQ) the answer is
None: the broker cannot be looked into, and :func:`tasks.outbox.is_lost` then calls nothing lost.

A message a worker reserved stays in the hash with the time it was delivered (kombu's ``unacked_index``) until
the worker acknowledges it; when the worker was killed, only the broker's visibility timeout (an hour by
default) would put it back. :func:`look_into` therefore tells reserved messages apart, with their age, and
:func:`restore` puts one back at the head of its queue (kombu's own ``restore_by_tag``) and :func:`forget`
drops one whose task has ended (its acknowledgement died with its worker).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from kombu.exceptions import OperationalError

from switchyard.errors import ServiceUnavailable
from tasks.app import app_for
from tasks.context import Context


def message_task_id(raw: bytes | str) -> str | None:
    """The Celery task id a kombu message (its JSON, as the Redis transport stores it) carries, if any."""
    return _task_id(_headers(_loads(raw)))


def message_eta(raw: bytes | str) -> float | None:
    """When a kombu message's task is due (its Celery ``eta`` header, epoch seconds); None when it has none."""
    return _eta(_headers(_loads(raw)))


def reserved_task_id(raw: bytes | str) -> str | None:
    """The task id of an ``unacked`` hash value: ``[message, exchange, routing key]``."""
    return _task_id(_reserved_headers(raw))


def reserved_eta(raw: bytes | str) -> float | None:
    """The ``eta`` (epoch seconds) of an ``unacked`` hash value's message, if it has one."""
    return _eta(_reserved_headers(raw))


def _loads(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _headers(message: Any) -> dict[str, Any]:
    headers = message.get("headers") if isinstance(message, dict) else None
    return headers if isinstance(headers, dict) else {}


def _reserved_headers(raw: bytes | str) -> dict[str, Any]:
    """The headers of the message in an ``unacked`` hash value (``[message, exchange, routing key]``)."""
    entry = _loads(raw)
    return _headers(entry[0]) if isinstance(entry, list) and entry else {}


def _task_id(headers: dict[str, Any]) -> str | None:
    task_id = headers.get("id")
    return task_id if isinstance(task_id, str) else None


def _eta(headers: dict[str, Any]) -> float | None:
    eta = headers.get("eta")
    if not isinstance(eta, str):
        return None
    try:
        due = datetime.fromisoformat(eta)
    except ValueError:
        return None
    return (due if due.tzinfo else due.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True)
class Reserved:
    """A message a worker holds unacknowledged: its delivery tag and when it was delivered (epoch seconds)."""

    tag: str
    since: float
    eta: float | None = None  # when its task was due (a deferral's countdown), if it had one


@dataclass(frozen=True)
class BrokerView:
    """What the broker holds at one instant: task ids waiting on a queue, and those reserved by a worker."""

    waiting: set[str] = field(default_factory=set)
    reserved: dict[str, Reserved] = field(default_factory=dict)

    @property
    def task_ids(self) -> set[str]:
        return self.waiting | set(self.reserved)


def on_broker(ctx: Context) -> set[str] | None:
    """Ids of the tasks with a message on the broker (one consistent read); None when it cannot be looked into.
    ServiceUnavailable when the broker does not answer."""
    view = look_into(ctx)
    return None if view is None else view.task_ids


def look_into(ctx: Context) -> BrokerView | None:
    """The broker's messages (one consistent read); None when it cannot be looked into (not Redis).
    ServiceUnavailable when the broker does not answer."""
    with _channel(ctx) as channel:
        if channel is None:
            return None
        return _read(channel, [g.queue for g in ctx.fleet.groups])


def restore(ctx: Context, tag: str) -> None:
    """Put a reserved message back at the head of its queue, as if its worker had rejected it."""
    with _channel(ctx) as channel:
        if channel is not None:
            channel.qos.restore_by_tag(tag, leftmost=True)


def forget(ctx: Context, tag: str) -> None:
    """Drop a reserved message whose task has ended: the acknowledgement its dead worker owed."""
    with _channel(ctx) as channel:
        if channel is not None:
            channel.client.pipeline().zrem(channel.unacked_index_key, tag).hdel(channel.unacked_key, tag).execute()


@contextmanager
def _channel(ctx: Context) -> Iterator[Any]:
    """The Redis transport's channel (None for another transport); ServiceUnavailable when it does not answer."""
    try:
        with app_for(ctx).connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            yield conn.default_channel if conn.transport.driver_type == "redis" else None
    except (OperationalError, redis.RedisError) as exc:
        raise ServiceUnavailable(f"the broker could not be looked into: {exc}") from None


def _read(channel: Any, queues: list[str]) -> BrokerView:
    keys = list(dict.fromkeys(channel._q_for_pri(q, pri) for q in queues for pri in channel.priority_steps))
    with channel.client.pipeline(transaction=True) as pipe:  # MULTI: every list and the hash at one instant
        for key in keys:
            pipe.lrange(key, 0, -1)
        pipe.hgetall(channel.unacked_key)
        pipe.zrange(channel.unacked_index_key, 0, -1, withscores=True)
        replies = pipe.execute()
    waiting = {task_id for reply in replies[:-2] for raw in reply if (task_id := message_task_id(raw)) is not None}
    return BrokerView(waiting=waiting, reserved=_reserved(replies[-2], replies[-1]))


def reservations(ctx: Context) -> dict[str, Reserved] | None:
    """Only the reserved messages (the hash and its index, not the queues: cheap under a long backlog)."""
    with _channel(ctx) as channel:
        if channel is None:
            return None
        with channel.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(channel.unacked_key)
            pipe.zrange(channel.unacked_index_key, 0, -1, withscores=True)
            held, index = pipe.execute()
        return _reserved(held, index)


def _reserved(held: dict[bytes, bytes], index: list[tuple[bytes, float]]) -> dict[str, Reserved]:
    """Task id -> its reservation; of two reservations of one task (a duplicate delivery), the younger."""
    since = {_text(tag): float(score) for tag, score in index}
    reserved: dict[str, Reserved] = {}
    for raw_tag, raw in held.items():
        headers, tag = _reserved_headers(raw), _text(raw_tag)  # the value parsed once, for its id and eta
        task_id = _task_id(headers)
        if task_id is None:
            continue
        entry = Reserved(tag=tag, since=since.get(tag, float("inf")), eta=_eta(headers))
        if task_id not in reserved or entry.since > reserved[task_id].since:
            reserved[task_id] = entry
    return reserved


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
