"""Which tasks have a message on the broker now: waiting on a queue, or reserved by a worker.

Only the Redis transport (Redis, Valkey, the embedded broker) can be looked into without taking messages:
kombu keeps each queue as lists (one per priority step) and every message a worker holds, unacknowledged
(running, prefetched, or waiting for its countdown), in the ``unacked`` hash until it is acknowledged. The
key names come from kombu's own channel, never from here. With another transport (RabbitMQ) the answer is
None: the broker cannot be looked into, and :func:`tasks.outbox.is_lost` then calls nothing lost.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from kombu.exceptions import OperationalError

from switchyard.errors import ServiceUnavailable
from tasks.app import app_for
from tasks.context import Context


def message_task_id(raw: bytes | str) -> str | None:
    """The Celery task id a kombu message (its JSON, as the Redis transport stores it) carries, if any."""
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    headers = message.get("headers") if isinstance(message, dict) else None
    task_id = headers.get("id") if isinstance(headers, dict) else None
    return task_id if isinstance(task_id, str) else None


def reserved_task_id(raw: bytes | str) -> str | None:
    """The task id of an ``unacked`` hash value: ``[message, exchange, routing key]``."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, list) or not entry:
        return None
    return message_task_id(json.dumps(entry[0]))


def on_broker(ctx: Context) -> set[str] | None:
    """Ids of the tasks with a message on the broker (one consistent read); None when it cannot be looked into.
    ServiceUnavailable when the broker does not answer."""
    try:
        with app_for(ctx).connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            if conn.transport.driver_type != "redis":
                return None
            return _read(conn.default_channel, [g.queue for g in ctx.fleet.groups])
    except (OperationalError, redis.RedisError) as exc:
        raise ServiceUnavailable(f"the broker could not be looked into: {exc}") from None


def _read(channel: Any, queues: list[str]) -> set[str]:
    keys = list(dict.fromkeys(channel._q_for_pri(q, pri) for q in queues for pri in channel.priority_steps))
    with channel.client.pipeline(transaction=True) as pipe:  # MULTI: every list and the hash at one instant
        for key in keys:
            pipe.lrange(key, 0, -1)
        pipe.hvals(channel.unacked_key)
        replies = pipe.execute()
    waiting = (message_task_id(raw) for reply in replies[:-1] for raw in reply)
    reserved = (reserved_task_id(raw) for raw in replies[-1])
    return {task_id for task_id in (*waiting, *reserved) if task_id is not None}
