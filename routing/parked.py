"""A provider's answer waiting to be stored, and the retry that stores it once the database is back.

An answer has been paid for the moment it arrives, so it must reach SQL whatever happens next. When the
database is away at that moment, the answer waits in the worker's memory and :func:`until_stored` tries
again (tenacity, backoff from the fleet file's ``limits``) until the database answers or the task's time
limit is near. While it waits, a copy is parked in the state Redis (:func:`routing.keys.answer_key`): if the
worker dies too, the redelivered task finds it there and records the call at its real cost
(:func:`tasks.claim.recover`). Parking is best effort: when the state Redis is away as well, the answer
waits in memory only, and a worker that dies then leaves a call whose cost recovery cannot know.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import redis
from sqlalchemy.exc import InterfaceError, OperationalError
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from routing.keys import answer_key
from switchyard.errors import LedgerUnavailable, StateUnavailable
from switchyard.usage import Usage

log = logging.getLogger(__name__)
T = TypeVar("T")
# A database that is away: the driver cannot connect or lost its connection (a ledger that could not commit)
OUTAGES = (OperationalError, InterfaceError, LedgerUnavailable)


@dataclass(frozen=True)
class ParkedAnswer:
    """Everything the attempt's row and the ledger's settle need, priced when the answer arrived."""

    provider: str
    model: str
    transport: str
    text: str
    usage: Usage
    cost_micros: int
    price_version: str
    latency_ms: float

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> ParkedAnswer:
        data: dict[str, Any] = json.loads(raw)
        return cls(**{**data, "usage": Usage(**data["usage"])})


class ParkedAnswers:
    """The answers waiting in the state Redis, one key per (task, attempt), each living ``ttl_s`` at most."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def park(self, task_id: str, attempt: int, answer: ParkedAnswer, *, ttl_s: float) -> bool:
        """Keep a copy; False (logged) when the state Redis is away too: the answer then waits in memory only."""
        try:
            self.client.set(answer_key(task_id, attempt), answer.to_json(), ex=max(1, round(ttl_s)))
        except redis.RedisError as exc:
            log.warning("task %s attempt %s: answer not parked in Redis (%s)", task_id, attempt, type(exc).__name__)
            return False
        return True

    def find(self, task_id: str, attempt: int) -> ParkedAnswer | None:
        """The parked answer, if any. Raises :class:`StateUnavailable` when Redis cannot say (fail closed: a
        recovery must not record a call as of unknown cost while its answer may be waiting)."""
        try:
            raw = self.client.get(answer_key(task_id, attempt))
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot look for parked answers: {type(exc).__name__}") from exc
        return None if raw is None else ParkedAnswer.from_json(raw)

    def drop(self, task_id: str, attempt: int) -> None:
        """Forget the copy once SQL has the answer (best effort: it expires anyway)."""
        try:
            self.client.delete(answer_key(task_id, attempt))
        except redis.RedisError as exc:
            log.info("task %s attempt %s: parked answer not dropped (%s)", task_id, attempt, type(exc).__name__)


def until_stored(
    store: Callable[[], T],
    *,
    initial_s: float,
    max_s: float,
    within_s: float,
    sleep: Callable[[float], None] = time.sleep,
    on_outage: Callable[[BaseException], None] = lambda _: None,
) -> T:
    """``store()``, tried again while the database is away (:data:`OUTAGES`), backing off from ``initial_s``
    to ``max_s``, for ``within_s`` at most; then the last error is raised. ``on_outage`` is told of each
    failure before the wait (the first one parks the answer)."""

    def before_sleep(state: Any) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None:
            on_outage(exc)

    retrying = Retrying(
        stop=stop_after_delay(max(within_s, 0.0)),
        wait=wait_exponential(multiplier=initial_s, max=max_s),
        retry=retry_if_exception_type(OUTAGES),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(store)
