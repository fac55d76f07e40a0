"""kombu's Redis transport with one narrow fix, so a worker survives a broker restart (``broker_transport``).

The bug, reproduced with real ``celery worker`` processes (kill -9 of the embedded valkey while tasks run,
then a restart; tests/test_broker_restart.py): when a worker loses its broker connection, Celery 5.7
``collect()``-s and closes it, and kombu detaches the connection's transport (``transport.client = None``).
Two things still use that connection's channel afterwards:

- closing it restores the messages the worker holds unacknowledged (``acks_late``: every task in flight);
- a task that was running when the broker went away finishes after the reconnect and acknowledges its
  message on the channel it came from.

Each needs a Redis client, and kombu's channel builds its pool from ``transport.client``, now None:
``AttributeError: 'NoneType' object has no attribute 'hostname'`` (``_connparams``). Celery tolerates only
connection errors there (``ignore_errors``, ``ack_log_error``), so the AttributeError escaped the consumer's
loop and the worker exited ("Unrecoverable error"). Reported against kombu before for other steps that close
channels late (celery/kombu#582, Gossip); a worker with no task in flight was never hit.

The fix: a channel whose connection was detached raises a connection error instead. Celery then logs
"Couldn't ack" and reconnects as for any broker error. Nothing is lost: with the Redis transport a message
that was not acknowledged stays in the broker's ``unacked`` hash and kombu restores it to its queue after the
visibility timeout (a redelivered task that already finished is not run again), and the outbox's sender
re-sends a task whose message is gone (:mod:`tasks.sender`). Drop this module when kombu checks for a detached
transport itself.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:  # collected after the broker went away: a connection error
            raise redis.ConnectionError("this broker connection was closed after the broker went away")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]
        return params


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"  # the value of Celery's broker_transport for a redis:// broker
