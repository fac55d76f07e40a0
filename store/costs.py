"""Money, from the spend ledger and the attempts: costs by provider, group and environment, and how much of
each budget's window is spent (``switchyard budget list``, ``/api/budgets``). Read-only, like
:mod:`store.queries`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from routing.budgets import Budget, effective, window_bounds
from store.budgets import overrides
from store.models import Attempt, Spend, Task
from store.queries import Row, as_utc, iso, usd
from switchyard.fleet import Fleet


def since_filter(column: Any, since: datetime | None, until: datetime | None = None) -> list[ColumnElement[bool]]:
    after = [] if since is None else [column >= as_utc(since)]
    return after if until is None else [*after, column < as_utc(until)]


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


def _spend_by(
    session: Session, column_name: str, since: datetime | None, until: datetime | None = None
) -> dict[str, Row]:
    """Charged and still-held micro-dollars in the ledger, grouped by one of its columns."""
    column = getattr(Spend, column_name)
    held = case((Spend.state == "held", Spend.held_micros), else_=0)
    query = select(column, func.count(), func.sum(Spend.charged_micros), func.sum(held)).group_by(column)
    query = query.where(*since_filter(Spend.created_at, since, until))
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
    return window_bounds(window, now)[0]


def budget_status(session: Session, fleet: Fleet, *, now: datetime | None = None) -> list[Row]:
    """One row per effective budget (the fleet file's, overlaid by ``switchyard budget set``) and target:
    what its current window holds against the cap and the alert line.

    A budget whose target is ``*`` on a scope other than ``all`` caps each target separately, so it yields one
    row per target that has spent in the window (or a single zero row when none has); a target with a budget
    of its own in the same window is shown under that one only. The money comes from the spend rows, each
    counted in the window its hold was made in: the same sums the ledger's counters hold.
    """
    now = now or datetime.now(UTC)
    budgets = effective(fleet.budgets, overrides(session))
    named = {budget.key for budget in budgets if budget.target != "*"}
    rows: list[Row] = []
    for budget in budgets:
        since, until = window_bounds(budget.window, now)
        spent = _budget_spend(session, budget.scope, budget.target, since, until)
        for target, money in spent.items():
            if budget.target == "*" and (budget.scope, target, budget.window) in named:
                continue
            rows.append(_budget_row(budget, target, money, since, until))
    return rows


def _budget_spend(session: Session, scope: str, target: str, since: datetime, until: datetime) -> dict[str, Row]:
    if scope == "all":
        rows = _spend_by(session, "state", since, until)
        return {"*": _combine(rows.values())}
    per_target = _spend_by(session, scope, since, until)
    if target != "*":
        return {target: _combine([per_target[target]] if target in per_target else [])}
    return per_target or {"*": _combine([])}


def _combine(parts: Any) -> Row:
    charged = held = 0
    for part in parts:
        charged += part["cost_micros"]
        held += part["held_micros"]
    return {**_money("cost", charged), **_money("held", held)}


def _budget_row(budget: Budget, target: str, money: Row, since: datetime, until: datetime) -> Row:
    used = money["cost_micros"] + money["held_micros"]
    alert = budget.alert_micros
    remaining = max(budget.cap_micros - used, 0)
    return {
        "scope": budget.scope,
        "target": target,
        "window": budget.window,
        "cap_usd": usd(budget.cap_micros),
        "alert_usd": None if alert is None else usd(alert),
        "action": budget.action,
        "source": budget.source,
        "since": iso(since),
        "until": iso(until),
        "spent_usd": money["cost_usd"],
        "held_usd": money["held_usd"],
        "used_usd": usd(used),
        "remaining_usd": usd(remaining),
        "cap_micros": budget.cap_micros,
        "alert_micros": alert,
        "used_micros": used,
        "remaining_micros": remaining,
        "alerting": alert is not None and used >= alert,
        "exhausted": used >= budget.cap_micros,
    }


def _gist(error_class: str | None, error: str | None) -> str:
    """The first clause of an attempt's error, e.g. ``ProviderUnavailable (claude: breaker open)``."""
    first = (error or "").split(";")[0].strip()
    return f"{error_class} ({first[:70]})" if first else str(error_class)


def fallbacks(session: Session, fleet: Fleet, task_ids: list[str]) -> list[Row]:
    """The tasks among ``task_ids`` that did not run on their ladder's first rung, with what they cost and why:
    the failed attempts' errors and the providers the router passed over (breaker open, over budget, ...)."""
    tasks = {t.id: t for t in session.scalars(select(Task).where(Task.id.in_(task_ids)))}
    attempts = session.scalars(select(Attempt).where(Attempt.task_id.in_(task_ids)).order_by(Attempt.attempt))
    by_task: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        by_task.setdefault(attempt.task_id, []).append(attempt)
    out: list[Row] = []
    for task_id, task in tasks.items():
        first = fleet.group(task.group).ladder[0]
        tried = by_task.get(task_id, [])
        if task.provider in (None, first) and not any(a.status == "failed" for a in tried):
            continue
        why = [f"{a.provider} failed: {_gist(a.error_class, a.error)}" for a in tried if a.status == "failed"]
        why += [f"passed over {note}" for a in tried if a.route_note for note in a.route_note.split("; ")]
        out.append(
            {
                "id": task_id,
                "kind": task.kind,
                "environment": task.environment,
                "status": task.status,
                "first_choice": first,
                "provider": task.provider,
                "cost_usd": usd(task.cost_micros),
                "why": "; ".join(dict.fromkeys(why)) or (task.reason or ""),
            }
        )
    return out
