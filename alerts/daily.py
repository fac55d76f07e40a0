"""The daily spend report: yesterday's (UTC) settled spend by provider and by group, as one alert a day.

:func:`spend_by` is the one small roll-up it needs (the reports package may take its place later); the
alert's key is the day, so however many senders run, a day is reported once. A day with no spend row is
not reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store import alerts
from store.db import session_scope
from store.models import Spend


@dataclass(frozen=True)
class Line:
    """Spend of one (provider, group) on the day: attempts charged and micro-dollars."""

    provider: str
    group: str
    attempts: int
    charged_micros: int


def spend_by(session: Session, day: date) -> list[Line]:
    """Settled spend of ``day`` (UTC) per provider and group, largest first."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    query = (
        select(Spend.provider, Spend.group, func.count(), func.coalesce(func.sum(Spend.charged_micros), 0))
        .where(Spend.created_at >= start, Spend.created_at < start + timedelta(days=1), Spend.state == "settled")
        .group_by(Spend.provider, Spend.group)
    )
    lines = [Line(p, g, int(n), int(micros)) for p, g, n, micros in session.execute(query)]
    return sorted(lines, key=lambda line: (-line.charged_micros, line.provider, line.group))


def report(day: date, lines: list[Line]) -> dict[str, Any]:
    """The alert row's fields for ``day`` (pure)."""
    total = sum(line.charged_micros for line in lines)
    by_provider: dict[str, int] = {}
    by_group: dict[str, int] = {}
    for line in lines:
        by_provider[line.provider] = by_provider.get(line.provider, 0) + line.charged_micros
        by_group[line.group] = by_group.get(line.group, 0) + line.charged_micros
    body = [f"Total ${total / 1e6:,.4f} over {sum(line.attempts for line in lines)} charged attempts."]
    body.append("By provider: " + ", ".join(f"{k} ${v / 1e6:,.4f}" for k, v in _largest(by_provider)) + ".")
    body.append("By group: " + ", ".join(f"{k} ${v / 1e6:,.4f}" for k, v in _largest(by_group)) + ".")
    return {
        "cause": alerts.DAILY_REPORT,
        "key": f"{alerts.DAILY_REPORT}:{day.isoformat()}",
        "title": f"Switchyard spend on {day.isoformat()}: ${total / 1e6:,.4f}",
        "body": "\n".join(body),
        "payload": {
            "day": day.isoformat(),
            "total_micros": total,
            "by_provider": by_provider,
            "by_group": by_group,
            "lines": [vars(line) for line in lines],
        },
    }


def _largest(amounts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(amounts.items(), key=lambda item: (-item[1], item[0]))


def record_yesterday(database_url: str, *, today: date) -> bool:
    """Record the report of the day before ``today`` unless it exists or the day had no spend; True if new."""
    day = today - timedelta(days=1)
    with session_scope(database_url) as session:
        if alerts.exists(session, key=f"{alerts.DAILY_REPORT}:{day.isoformat()}"):
            return False
        lines = spend_by(session, day)
        if not lines:
            return False
        return alerts.record(session, **report(day, lines))
