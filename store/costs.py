"""Money, from the spend ledger and the attempts: costs by provider, group and environment, and how much of
each budget's window is spent. Read-only, like :mod:`store.queries`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from store.models import MICROS, Attempt, Spend
from store.queries import Row, as_utc, iso, usd
from switchyard.fleet import Fleet


def since_filter(column: Any, since: datetime | None) -> list[ColumnElement[bool]]:
    return [] if since is None else [column >= as_utc(since)]


USAGE_COLUMNS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)


def _usage_by_provider(session: Session, since: datetime | None) -> dict[str, Row]:
    sums = [func.coalesce(func.sum(getattr(Attempt, name)), 0).label(name) for name in USAGE_COLUMNS]
    seconds = func.coalesce(func.sum(Attempt.compute_seconds), 0.0).label("compute_seconds")
    query = select(Attempt.provider, func.count().label("calls"), *sums, seconds)
    query = query.where(*since_filter(Attempt.started_at, since)).group_by(Attempt.provider)
    usage: dict[str, Row] = {}
    for row in session.execute(query).mappings():
        usage[row["provider"]] = {"calls": row["calls"], **{name: int(row[name]) for name in USAGE_COLUMNS}}
        usage[row["provider"]]["compute_seconds"] = float(row["compute_seconds"])
    return usage


def _spend_by(session: Session, column_name: str, since: datetime | None) -> dict[str, Row]:
    """Charged and still-held micro-dollars in the ledger, grouped by one of its columns."""
    column = getattr(Spend, column_name)
    held = case((Spend.state == "held", Spend.held_micros), else_=0)
    query = select(column, func.count(), func.sum(Spend.charged_micros), func.sum(held)).group_by(column)
    query = query.where(*since_filter(Spend.created_at, since))
    return {
        key: {"charges": count, **_money("cost", int(charged or 0)), **_money("held", int(held_sum or 0))}
        for key, count, charged, held_sum in session.execute(query)
    }


def _money(prefix: str, micros: int) -> Row:
    return {f"{prefix}_micros": micros, f"{prefix}_usd": usd(micros)}


def _keyed(rows: dict[str, Row], key: str) -> list[Row]:
    return [{key: name, **rows[name]} for name in sorted(rows)]


def costs(session: Session, *, since: datetime | None = None) -> Row:
    """Usage (attempts) and money (the spend ledger) by provider, group and environment, with the total."""
    usage = _usage_by_provider(session, since)
    money = _spend_by(session, "provider", since)
    empty_usage: Row = {"calls": 0, **dict.fromkeys(USAGE_COLUMNS, 0), "compute_seconds": 0.0}
    empty_money: Row = {"charges": 0, **_money("cost", 0), **_money("held", 0)}
    providers = {
        name: {**empty_usage, **usage.get(name, {}), **empty_money, **money.get(name, {})}
        for name in set(usage) | set(money)
    }
    total = {key: sum(row[key] for row in providers.values()) for key in (*empty_usage, *empty_money)}
    total.update(cost_usd=usd(total["cost_micros"]), held_usd=usd(total["held_micros"]))
    return {
        "since": iso(as_utc(since)) if since else None,
        "providers": _keyed(providers, "provider"),
        "groups": _keyed(_spend_by(session, "group", since), "group"),
        "environments": _keyed(_spend_by(session, "environment", since), "environment"),
        "total": total,
    }


def window_start(window: str, now: datetime) -> datetime:
    """The start of the calendar window (UTC) that ``now`` falls in: this hour, today, this month."""
    now = as_utc(now)
    starts = {
        "hour": now.replace(minute=0, second=0, microsecond=0),
        "day": now.replace(hour=0, minute=0, second=0, microsecond=0),
        "month": now.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
    }
    return starts[window]


def budget_status(session: Session, fleet: Fleet, *, now: datetime | None = None) -> list[Row]:
    """One row per (budget, target): spend so far in the current window against the cap and the alert line.

    A budget whose target is ``*`` on a scope other than ``all`` caps each target separately, so it yields one
    row per target that has spent in the window (or a single zero row when none has).
    """
    now = now or datetime.now(UTC)
    rows: list[Row] = []
    for budget in fleet.budgets:
        since = window_start(budget.window, now)
        spent = _budget_spend(session, budget.scope, budget.target, since)
        for target, money in spent.items():
            rows.append(_budget_row(budget.model_dump(), target, money, since))
    return rows


def _budget_spend(session: Session, scope: str, target: str, since: datetime) -> dict[str, Row]:
    if scope == "all":
        rows = _spend_by(session, "state", since)
        return {"*": _combine(rows.values())}
    per_target = _spend_by(session, scope, since)
    if target != "*":
        return {target: _combine([per_target[target]] if target in per_target else [])}
    return per_target or {"*": _combine([])}


def _combine(parts: Any) -> Row:
    charged = held = 0
    for part in parts:
        charged += part["cost_micros"]
        held += part["held_micros"]
    return {**_money("cost", charged), **_money("held", held)}


def _budget_row(budget: Row, target: str, money: Row, since: datetime) -> Row:
    cap = round(budget["cap_usd"] * MICROS)
    alert = round(budget["alert_usd"] * MICROS) if budget["alert_usd"] is not None else None
    used = money["cost_micros"] + money["held_micros"]
    return {
        **budget,
        "target": target,
        "since": iso(since),
        "spent_usd": money["cost_usd"],
        "held_usd": money["held_usd"],
        "remaining_usd": usd(max(cap - used, 0)),
        "alerting": alert is not None and used >= alert,
        "exhausted": used >= cap,
    }
