"""The alerts' rows: one per cause, recorded where the event happens, delivered later by a periodic sender.

Same rules as :mod:`store.repo`: a connection or session passed in, keyword-only arguments, never a commit.

    record     insert the alert unless its ``dedupe_key`` has one already (once per budget window, per breaker
               opening, per task): True when this call recorded it. Called inside the event's transaction
               (the ledger's hold or settle, the breaker transition's row, the task's terminal status)
    claim_due  take the pending alerts whose next try is due, each for ``lease_s`` (a sender that dies while
               delivering leaves it due again once the lease runs out: a restart loses no alert)
    finish     the outcome of one delivery: delivered, given up (``failed``), ``unsent`` (no URL), or pending
               with its next try
    listing    the newest alerts, for ``switchyard alerts list``
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, Table, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store import names
from store.models import AlertRow, utcnow

# their home is store.names (importable without SQLAlchemy, for the CLI's help text)
BUDGET_ALERT = names.BUDGET_ALERT
BUDGET_CAP = names.BUDGET_CAP
BREAKER_OPENED = names.BREAKER_OPENED
BREAKER_CLOSED = names.BREAKER_CLOSED
PROVIDER_DISABLED = names.PROVIDER_DISABLED
TASK_FAILED = names.TASK_FAILED
DAILY_REPORT = names.DAILY_REPORT
CHARGE_OVER_HOLD = names.CHARGE_OVER_HOLD
CAUSES = names.ALERT_CAUSES
STATES = ("pending", "delivered", "failed", "unsent")
_TABLE = cast(Table, AlertRow.__table__)


@dataclass(frozen=True)
class Due:
    """A pending alert taken by a sender, with what it needs to deliver it."""

    id: int
    cause: str
    title: str
    body: str
    attempts: int
    delivered_to: tuple[str, ...]


def record(
    db: Connection | Session,
    *,
    cause: str,
    key: str,
    title: str,
    body: str,
    payload: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> bool:
    """Record the alert ``key`` of ``cause``; False when it was recorded before (nothing changes)."""
    if cause not in CAUSES:
        raise ValueError(f"alert cause {cause!r} is not one of {', '.join(CAUSES)}")
    values = {
        "cause": cause,
        "dedupe_key": key[:255],
        "title": title[:255],
        "body": body,
        "payload": payload or {},
        "state": "pending",
        "attempts": 0,
        "delivered_to": [],
        "created_at": now or utcnow(),
    }
    conn = db.connection() if isinstance(db, Session) else db
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(_TABLE).values(values).on_conflict_do_nothing(index_elements=["dedupe_key"])
    return len(conn.execute(statement.returning(_TABLE.c.id)).all()) == 1


def claim_due(session: Session, *, now: datetime, lease_s: float, limit: int = 50) -> list[Due]:
    """The pending alerts due at ``now``, oldest first, each taken for ``lease_s`` by a compare-and-set (two
    senders never deliver one alert at once)."""
    is_due = (AlertRow.state == "pending", or_(AlertRow.next_try_at.is_(None), AlertRow.next_try_at <= now))
    candidates = session.scalars(select(AlertRow.id).where(*is_due).order_by(AlertRow.id).limit(limit)).all()
    taken: list[int] = []
    lease_until = now + timedelta(seconds=lease_s)
    for alert_id in candidates:  # still due: no other sender took it meanwhile
        claim = update(AlertRow).where(AlertRow.id == alert_id, *is_due).values(next_try_at=lease_until)
        if cast(CursorResult[Any], session.execute(claim)).rowcount == 1:
            taken.append(alert_id)
    rows = session.scalars(select(AlertRow).where(AlertRow.id.in_(taken)).order_by(AlertRow.id)).all()
    return [Due(r.id, r.cause, r.title, r.body, r.attempts, tuple(r.delivered_to or ())) for r in rows]


def finish(
    session: Session,
    *,
    alert_id: int,
    state: str,
    delivered_to: tuple[str, ...],
    error: str | None,
    next_try_at: datetime | None,
    now: datetime,
) -> None:
    """One delivery's outcome (``error`` masked by the caller)."""
    if state not in STATES:
        raise ValueError(f"alert state {state!r} is not one of {', '.join(STATES)}")
    values: dict[str, Any] = {
        "state": state,
        "attempts": AlertRow.attempts + 1,
        "delivered_to": list(delivered_to),
        "last_error": None if error is None else error[:2000],
        "next_try_at": next_try_at,
    }
    if state == "delivered":
        values["delivered_at"] = now
    session.execute(update(AlertRow).where(AlertRow.id == alert_id).values(**values))


def exists(session: Session, *, key: str) -> bool:
    return session.scalar(select(AlertRow.id).where(AlertRow.dedupe_key == key)) is not None


def listing(session: Session, *, limit: int = 100, cause: str | None = None) -> list[dict[str, Any]]:
    """The newest alerts first, as plain dicts (what ``alerts list --json`` prints)."""
    query = select(AlertRow).order_by(AlertRow.id.desc()).limit(limit)
    if cause is not None:
        query = query.where(AlertRow.cause == cause)
    return [_as_dict(row) for row in session.scalars(query)]


def _as_dict(row: AlertRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "cause": row.cause,
        "dedupe_key": row.dedupe_key,
        "title": row.title,
        "body": row.body,
        "payload": row.payload,
        "state": row.state,
        "attempts": row.attempts,
        "next_try_at": _iso(row.next_try_at),
        "last_error": row.last_error,
        "created_at": _iso(row.created_at),
        "delivered_at": _iso(row.delivered_at),
    }


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).isoformat()
