"""The outbox's rows: what Switchyard owes the broker, written in the transaction that creates the debt.

Same rules as :mod:`store.repo`: a session first, keyword-only arguments, flush and never commit.

- ``send``: put a task's message on its group's queue. Added with the task row (:func:`tasks.submit.submit`)
  or when a held task is released (:mod:`tasks.dependencies`).
- ``follow_ups``: run a finished task's follow-ups (review, integration, dependents, its plan). Added by
  :func:`store.repo.finish_task` in the transaction that gives the task its terminal status.

The writer acts right after its commit and marks the row sent; a row still unsent after a grace period (the
writer died, or the broker was away) is taken by the periodic sender (:mod:`tasks.sender`). A failure counts
a try and sets when to try again; it never ends the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.models import Outbox, Task, utcnow
from switchyard.logs import mask

SEND = "send"
FOLLOW_UPS = "follow_ups"
ACTIONS = (SEND, FOLLOW_UPS)


@dataclass(frozen=True)
class Owed:
    """An unsent row, with what the sender needs to act on it."""

    task_id: str
    action: str
    kind: str
    tries: int


@dataclass(frozen=True)
class Sent:
    """A task whose message was sent and that has not started: maybe lost (see :func:`tasks.outbox.is_lost`)."""

    task_id: str
    kind: str
    status: str
    reason: str | None
    sent_at: datetime


def add(session: Session, *, task_id: str, action: str) -> None:
    """Owe ``action`` for ``task_id``; owed afresh when it was owed before (a task run again and finished
    again, a held task released again after a retry)."""
    if action not in ACTIONS:
        raise ValueError(f"outbox action {action!r} is not one of {', '.join(ACTIONS)}")
    values = {"task_id": task_id, "action": action, "created_at": utcnow(), "tries": 0, "resends": 0}
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(Outbox).values(values)
    again = {"created_at": statement.excluded.created_at, "sent_at": None, "tries": 0, "next_try_at": None}
    session.execute(statement.on_conflict_do_update(index_elements=["task_id", "action"], set_=again))


def mark_sent(session: Session, *, task_id: str, action: str, now: datetime | None = None) -> None:
    """Done: the message is on the broker, or the follow-ups ran."""
    session.execute(
        update(Outbox)
        .where(Outbox.task_id == task_id, Outbox.action == action)
        .values(sent_at=now or utcnow(), next_try_at=None)
    )


def mark_failed(session: Session, *, task_id: str, action: str, error: str, retry_at: datetime) -> None:
    """One more failed try; the sender tries again at ``retry_at``."""
    session.execute(
        update(Outbox)
        .where(Outbox.task_id == task_id, Outbox.action == action, Outbox.sent_at.is_(None))
        .values(tries=Outbox.tries + 1, next_try_at=retry_at, last_error=mask(error)[:2000])
    )


def mark_resent(session: Session, *, task_id: str, now: datetime, why: str) -> None:
    """The task's message was sent again because it was on no queue."""
    session.execute(
        update(Outbox)
        .where(Outbox.task_id == task_id, Outbox.action == SEND)
        .values(sent_at=now, resends=Outbox.resends + 1, last_error=mask(why)[:2000])
    )


def get(session: Session, *, task_id: str, action: str) -> Outbox | None:
    statement = select(Outbox).where(Outbox.task_id == task_id, Outbox.action == action)
    return session.scalar(statement.execution_options(populate_existing=True))


def owed(session: Session, *, created_before: datetime, now: datetime, limit: int) -> list[Owed]:
    """Unsent rows older than ``created_before`` whose next try is due, oldest first."""
    statement = (
        select(Outbox.task_id, Outbox.action, Task.kind, Outbox.tries)
        .join(Task, Task.id == Outbox.task_id)
        .where(
            Outbox.sent_at.is_(None),
            Outbox.created_at <= created_before,
            or_(Outbox.next_try_at.is_(None), Outbox.next_try_at <= now),
        )
        .order_by(Outbox.created_at, Outbox.task_id)
        .limit(limit)
    )
    return [Owed(*row) for row in session.execute(statement)]


def sent_not_started(session: Session, *, sent_before: datetime, statuses: tuple[str, ...], limit: int) -> list[Sent]:
    """Tasks in ``statuses`` whose message was (last) sent before ``sent_before``, oldest send first."""
    statement = (
        select(Task.id, Task.kind, Task.status, Task.reason, Outbox.sent_at)
        .join(Outbox, (Outbox.task_id == Task.id) & (Outbox.action == SEND))
        .where(Task.status.in_(statuses), Outbox.sent_at.is_not(None), Outbox.sent_at <= sent_before)
        .order_by(Outbox.sent_at, Task.id)
        .limit(limit)
    )
    rows = session.execute(statement)
    return [Sent(i, kind, status, reason, _utc(sent)) for i, kind, status, reason, sent in rows if sent is not None]


def _utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were written in UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
