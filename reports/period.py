"""The period and grouping keys of a report, parsed from what a person typed. Pure: the clock is passed in.

``--since`` and ``--until`` take a date (``2026-11-01``, a whole UTC day: ``--until 2026-11-30`` includes
the 30th), an ISO moment (``2026-11-01T08:00``, UTC unless it names an offset) or a duration back from now
(``90m``, ``24h``, ``7d``, ``2w``). The default period is this calendar month (UTC) up to now.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from switchyard.errors import InputError

KEYS = ("env", "stage", "group", "kind", "provider", "model", "day", "hour")
DURATION = re.compile(r"^(\d{1,6})([mhdw])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
FORMS = "a date (2026-11-01), an ISO moment (2026-11-01T08:00) or a duration back from now (90m, 24h, 7d, 2w)"


@dataclass(frozen=True)
class Period:
    since: datetime
    until: datetime

    @property
    def hours(self) -> float:
        return (self.until - self.since).total_seconds() / 3600


def parse_keys(text: str | None) -> tuple[str, ...]:
    """``env,provider`` as ("env", "provider"); empty means no grouping (the totals only)."""
    keys = tuple(part.strip() for part in (text or "").split(",") if part.strip())
    for key in keys:
        if key not in KEYS:
            raise InputError(f"--by: unknown key {key!r}; choose from {', '.join(KEYS)} (comma-separated)")
    if len(set(keys)) != len(keys):
        raise InputError(f"--by: {text!r} names a key twice; name each of {', '.join(KEYS)} at most once")
    return keys


def _moment(text: str, now: datetime, *, end_of_day: bool, option: str) -> datetime:
    try:
        return _read(text.strip(), now, end_of_day=end_of_day, option=option)
    except OverflowError:
        raise InputError(f"{option}: {text!r} is outside the years 1-9999 (UTC); give a moment inside them") from None


def _read(value: str, now: datetime, *, end_of_day: bool, option: str) -> datetime:
    found = DURATION.match(value)
    if found:
        return now - timedelta(**{UNITS[found.group(2)]: int(found.group(1))})
    try:
        day = date.fromisoformat(value)
    except ValueError:
        day = None
    if day is not None and len(value) == 10:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start + timedelta(days=1) if end_of_day else start
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"{option}: cannot read {value!r}; give {FORMS}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def month_start(now: datetime) -> datetime:
    return datetime(now.year, now.month, 1, tzinfo=UTC)


def parse_period(since: str | None, until: str | None, now: datetime) -> Period:
    """The period ``[since, until)`` in UTC; ``since`` after ``until`` is refused, an equal pair is empty."""
    start = _moment(since, now, end_of_day=False, option="--since") if since else month_start(now)
    end = _moment(until, now, end_of_day=True, option="--until") if until else now
    if start > end:
        raise InputError(
            f"--since {since or start.isoformat()!r} ({start.isoformat()}) is after --until "
            f"{until or 'now'!r} ({end.isoformat()}); give a since before the until"
        )
    return Period(start, end)
