"""Task leases: a running task belongs to the worker that holds its lease, for as long as it renews it.

    take     a delivery of the task's message claims it: ``queued`` → ``running`` under a new lease owner
    renew    the worker that runs it pushes ``lease_until`` on (a thread of the worker, see tasks/lease.py)
    expired  running or deferred tasks whose lease ran out: their worker died (or lost its deferred message)
    held_by  running or deferred tasks whose lease runs of one host hold (the detector checks their processes)
    resend   the detector marks one of them as sent again, under a token the new message carries

The columns are ``tasks.lease_owner`` and ``tasks.lease_until``. ``lease_owner`` names who may run the task
now: the run that holds it, or the token of the message expected to carry it on (a deferral's retry, a
re-sent message). A delivery may take the task when it is queued, when it was never leased, when its message
carries the owner's token, or when the lease has run out; anything else is a second delivery of a task that
runs elsewhere under a live lease (the detector's copy, the broker redelivering a dead worker's message after
its visibility timeout) and ends quietly. :func:`decide` is that rule, as a pure function.

Taking and re-sending are compare-and-set UPDATEs on the values read (status, owner, lease end), so two
deliveries can never both take a task, on SQLite (``BEGIN IMMEDIATE``) or PostgreSQL (the row lock, then the
``WHERE`` re-checked on the row the winner wrote).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from store.models import TERMINAL_STATUSES, Task
from store.repo import _changed

Verdict = Literal["take", "busy", "finished", "missing"]
LEASED = ("running", "deferred")  # the statuses whose lease the detector watches
RESENT = "resent:"  # the prefix of a detector's token
CAS_TRIES = 5  # a compare-and-set lost this often in a row: others are busy taking it, so it is theirs


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class LeaseView:
    """A task's lease as read, with what compare-and-set needs to write over exactly this version."""

    task_id: str
    kind: str
    group: str
    status: str
    owner: str | None
    until: datetime | None


def decide(view: LeaseView | None, token: str | None, now: datetime) -> Verdict:
    """May a delivery whose message carries ``token`` (None: a plain message) take the task now?"""
    if view is None:
        return "missing"
    if view.status in TERMINAL_STATUSES:
        return "finished"
    if view.status == "queued" or view.until is None:
        return "take"
    if token is not None and token == view.owner:  # sent by the owner itself, or by the detector
        return "take"
    return "take" if as_utc(view.until) <= as_utc(now) else "busy"


def resend_token(owner: str | None) -> str:
    """The token of a re-sent message: the one already out (every copy may take the task, the first wins),
    or a new one, which also tells a run that was only slow to renew that its lease is gone."""
    if owner is not None and owner.startswith(RESENT):
        return owner
    return f"{RESENT}{uuid.uuid4().hex}"


# --- SQL -----------------------------------------------------------------------------------------------


def read(session: Session, task_id: str) -> LeaseView | None:
    row = session.execute(_columns().where(Task.id == task_id)).one_or_none()
    return None if row is None else LeaseView(*row)


def _columns() -> Any:
    return select(Task.id, Task.kind, Task.group, Task.status, Task.lease_owner, Task.lease_until)


def _same(view: LeaseView) -> tuple[Any, ...]:
    """The task still as ``view`` read it."""
    return (
        Task.id == view.task_id,
        Task.status == view.status,
        Task.lease_owner.is_not_distinct_from(view.owner),
        Task.lease_until.is_not_distinct_from(view.until),
    )


def take(session: Session, *, task_id: str, owner: str, token: str | None, until: datetime, now: datetime) -> Verdict:
    """Claim the task for ``owner`` until ``until`` (``running``), if :func:`decide` allows it."""
    for _ in range(CAS_TRIES):
        view = read(session, task_id)
        verdict = decide(view, token, now)
        if verdict != "take" or view is None:
            return verdict
        values = {"status": "running", "reason": None, "lease_owner": owner, "lease_until": until}
        statement = update(Task).where(*_same(view)).values(started_at=func.coalesce(Task.started_at, now), **values)
        if _changed(session, statement):
            return "take"
    return "busy"


def renew(session: Session, *, task_id: str, owner: str, until: datetime) -> bool:
    """Push the lease ``owner`` holds on to ``until``; False when another owner has it now (it was lost)."""
    statement = update(Task).where(Task.id == task_id, Task.lease_owner == owner).values(lease_until=until)
    return _changed(session, statement)


def expired(session: Session, *, now: datetime, group: str | None = None, limit: int = 100) -> list[LeaseView]:
    """Running or deferred tasks (of ``group``) whose lease ran out before ``now``, longest expired first."""
    statement = _columns().where(Task.status.in_(LEASED), Task.lease_until < now)
    if group is not None:
        statement = statement.where(Task.group == group)
    rows = session.execute(statement.order_by(Task.lease_until).limit(limit))
    return [LeaseView(*row) for row in rows]


def held_by(session: Session, *, prefix: str, group: str | None = None, limit: int = 100) -> list[LeaseView]:
    """Running or deferred tasks (of ``group``) whose lease an owner named ``prefix…`` holds, however long it
    has left (the detector asks for the runs of its own host, to tell which of them died)."""
    statement = _columns().where(Task.status.in_(LEASED), Task.lease_owner.startswith(prefix, autoescape=True))
    if group is not None:
        statement = statement.where(Task.group == group)
    return [LeaseView(*row) for row in session.execute(statement.order_by(Task.lease_until).limit(limit))]


def mark_resent(session: Session, view: LeaseView, *, token: str, until: datetime) -> bool:
    """Give the expired lease to the message about to be re-sent with ``token``, for it to be picked up by
    ``until``; False when the task changed since ``view`` was read (someone took or finished it)."""
    return _changed(session, update(Task).where(*_same(view)).values(lease_owner=token, lease_until=until))


def lease_end(now: datetime, seconds: float) -> datetime:
    return as_utc(now) + timedelta(seconds=seconds)
