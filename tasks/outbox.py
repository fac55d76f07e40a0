"""The outbox's decisions, pure: when a failed send is tried again, which rows are due, which tasks are lost.

No clock, database or broker here: the sender (:mod:`tasks.sender`) and :mod:`tasks.send` gather the inputs
and act on the answers. The policy is the fleet file's ``[outbox]`` (:class:`switchyard.fleet.OutboxPolicy`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from store.pipeline import NO_MESSAGE
from switchyard.fleet_models import OutboxPolicy

LOST_STATUSES = ("queued", "deferred")  # a task in these must have a message on the broker


def retry_delay(tries: int, policy: OutboxPolicy) -> float:
    """Seconds to wait after the ``tries``-th failed try (1, 2, …): doubling from ``retry_initial_s``, capped."""
    exponent = max(tries - 1, 0)
    if exponent > 32:  # 2**33 times any initial delay is past every cap; keeps the float finite
        return policy.retry_max_s
    return float(min(policy.retry_initial_s * 2**exponent, policy.retry_max_s))


def retry_at(tries: int, now: datetime, policy: OutboxPolicy) -> datetime:
    return now + timedelta(seconds=retry_delay(tries, policy))


def owed_before(now: datetime, policy: OutboxPolicy) -> datetime:
    """Rows created before this are the sender's: their writer had ``grace_s`` to act on them itself."""
    return now - timedelta(seconds=policy.grace_s)


def sent_before(now: datetime, policy: OutboxPolicy) -> datetime:
    """A task whose message was sent before this and has not started may be lost (if the broker says so)."""
    return now - timedelta(seconds=policy.lost_after_s)


def is_lost(
    *, status: str, reason: str | None, sent_at: datetime, now: datetime, policy: OutboxPolicy, on_broker: bool | None
) -> bool:
    """Whether a task's message must be sent again: it waits for a message (queued, or deferred by a worker
    and not held for its dependencies), its last send is older than ``lost_after_s`` (well past normal queue
    latency), and the broker was looked into and has no message for it. ``on_broker`` None means the broker
    cannot be looked into (not Redis): then nothing is called lost, since a long backlog is not a loss."""
    if status not in LOST_STATUSES or on_broker is None or on_broker:
        return False
    if parked(status, reason):
        return False
    return sent_at <= sent_before(now, policy)


def parked(status: str, reason: str | None) -> bool:
    """Held with no message on purpose (for its dependencies, or a plan for its sub-tasks to land)."""
    return status == "deferred" and (reason or "").startswith(NO_MESSAGE)
