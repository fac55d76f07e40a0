"""The tries inside an attempt (table ``attempt_tries``): every call of a provider that tenacity made.

An attempt is one route (provider, model, hold); inside it the guarded call tries up to ``retry.attempts``
times (:mod:`routing.guard`). Each try that reached the provider is a row: start, end, ``succeeded`` or
``failed``, and for a failure the error's class (``TransientError`` for a timeout or a 5xx, ``RateLimited``,
``RequestRejected``, ``ModelNotFound``...), its HTTP status and its text (already scrubbed of secrets by the
provider clients). A try the breaker refused never reached the provider and has no row: the attempt's own
``error_class`` (``ProviderUnavailable``) says so.

:func:`record_try` writes, and flushes without committing like :mod:`store.repo`; :func:`attach_tries` adds
each attempt's tries to the rows of :func:`store.queries.task_detail` (``tasks show``, ``GET /api/tasks/{id}``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import AttemptTry
from switchyard.logs import mask

TRY_STATUSES = ("succeeded", "failed")
ERROR_CHARS = 1000


@dataclass(frozen=True)
class TryRecord:
    """One try as the attempt loop saw it, ready to be written."""

    number: int
    started_at: datetime
    ended_at: datetime
    status: str
    error_class: str | None = None
    http_status: int | None = None
    error: str | None = None


def record_try(session: Session, *, task_id: str, attempt: int, provider: str, record: TryRecord) -> None:
    """Append one try of ``attempt`` of ``task_id`` on ``provider``; a try already on record (its number in
    that attempt: a store tried again after a commit whose answer was lost) is not written twice."""
    if record.status not in TRY_STATUSES:
        raise ValueError(f"a try is {' or '.join(TRY_STATUSES)}, not {record.status!r}")
    same = select(AttemptTry.id).where(
        AttemptTry.task_id == task_id, AttemptTry.attempt == attempt, AttemptTry.number == record.number
    )
    if session.scalar(same.limit(1)) is not None:
        return
    session.add(
        AttemptTry(
            task_id=task_id,
            attempt=attempt,
            number=record.number,
            provider=provider,
            status=record.status,
            error_class=record.error_class,
            http_status=record.http_status,
            error=mask(record.error)[:ERROR_CHARS] if record.error else None,
            started_at=record.started_at,
            ended_at=record.ended_at,
        )
    )
    session.flush()


def tries_of(session: Session, *, task_id: str) -> dict[int, list[dict[str, Any]]]:
    """The task's tries by attempt number, each list in the order they were made."""
    query = select(AttemptTry).where(AttemptTry.task_id == task_id)
    by_attempt: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in session.scalars(query.order_by(AttemptTry.attempt, AttemptTry.number, AttemptTry.id)):
        by_attempt[row.attempt].append(_row(row))
    return dict(by_attempt)


def attach_tries(session: Session, task_id: str, attempts: Sequence[dict[str, Any]]) -> None:
    """Give every attempt row of ``task_id`` its ``tries`` (an empty list when none reached the provider)."""
    found = tries_of(session, task_id=task_id)
    for attempt in attempts:
        attempt["tries"] = found.get(attempt["attempt"], [])


def _row(row: AttemptTry) -> dict[str, Any]:
    started, ended = _utc(row.started_at), _utc(row.ended_at)
    return {
        "try": row.number,
        "status": row.status,
        "error_class": row.error_class,
        "http_status": row.http_status,
        "error": row.error,
        "started_at": started.isoformat(),
        "ended_at": ended.isoformat(),
        "duration_ms": round((ended - started).total_seconds() * 1000, 1),
    }


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes, which are UTC by construction."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
