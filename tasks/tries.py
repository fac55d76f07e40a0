"""Times and records each try of an attempt's provider call (:mod:`store.tries`, table ``attempt_tries``).

:meth:`TryLog.wrap` wraps the one function the guarded call runs per try (:func:`routing.guard.guarded_call`
calls it once for each try the breaker let through), so every call that reached the provider is seen, with
the error it raised. A failed try is written at once, in a transaction of its own: the backoff that follows
costs more than the write, and a worker that dies during the backoff leaves the try on record. The successful
try is kept and written by the attempt loop in the same transaction as the answer (:meth:`write_pending`), so
the happy path pays no extra round trip to the database.

A database that cannot be reached costs the record of a failed try (logged), never the call's own outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from store.db import session_scope
from store.tries import TryRecord, record_try
from switchyard.errors import ProviderError

T = TypeVar("T")
log = logging.getLogger(__name__)


class TryLog:
    """The tries of one attempt (``task_id``, ``attempt``) on ``provider``; ``now`` is the clock."""

    def __init__(
        self, database_url: str, task_id: str, attempt: int, provider: str, now: Callable[[], datetime]
    ) -> None:
        self.database_url, self.task_id, self.attempt, self.provider = database_url, task_id, attempt, provider
        self.now = now
        self.made = 0
        self.pending: TryRecord | None = None

    def wrap(self, fn: Callable[[], T]) -> Callable[[], T]:
        """``fn`` timed and recorded on every call."""

        def one_try() -> T:
            self.made += 1
            number, started = self.made, self.now()
            try:
                result = fn()
            except Exception as exc:
                self._write_failed(failed(number, started, self.now(), exc))
                raise
            self.pending = TryRecord(number, started, self.now(), "succeeded")
            return result

        return one_try

    def write_pending(self, session: Session) -> None:
        """Write the successful try in the caller's transaction (the one that stores the answer; it is tried again
        while the database is away, so the try stays pending until that transaction is done)."""
        if self.pending is not None:
            record_try(session, task_id=self.task_id, attempt=self.attempt, provider=self.provider, record=self.pending)

    def _write_failed(self, record: TryRecord) -> None:
        try:
            with session_scope(self.database_url) as session:
                record_try(session, task_id=self.task_id, attempt=self.attempt, provider=self.provider, record=record)
        except SQLAlchemyError as exc:  # the class only: a driver's message may quote the row or the server
            what = f"try {record.number} of {self.task_id} attempt {self.attempt}"
            log.warning("%s not recorded (%s)", what, type(exc).__name__)


def failed(number: int, started: datetime, ended: datetime, exc: Exception) -> TryRecord:
    """The record of a try that raised ``exc`` (pure)."""
    status = exc.status if isinstance(exc, ProviderError) else None
    return TryRecord(number, started, ended, "failed", type(exc).__name__, status, str(exc) or None)
