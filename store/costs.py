"""Money, from the spend ledger and the attempts: costs by provider, group and environment, and how much of
each budget's window is spent (``switchyard budget list``, ``/api/budgets``). Read-only, like
:mod:`store.queries`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from store.budgets import overrides
from store.models import Attempt, BreakerTransition, Spend, Task
from store.queries import Row, as_utc, iso, usd
from switchyard.budgets import Budget, effective, window_bounds
from switchyard.fleet import Fleet

# The price version of a charge nobody knows the real cost of: a call left open by a worker that died (during
# the call, or while its answer waited for the database) is charged at the amount held for it, and flagged.
UNKNOWN_COST = "unknown cost: charged at the amount held"
UNKNOWN_COST_ERROR = "UnknownCost"  # the attempt's error_class


def since_filter(column: Any, since: datetime | None, until: datetime | None = None) -> list[ColumnElement[bool]]:
    after = [] if since is None else [column >= as_utc(since)]
    return after if until is None else [*after, column < as_utc(until)]


USAGE_COLUMNS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",  # 5-minute cache writes
    "cache_write_1h_tokens",  # 1-hour cache writes (priced apart)
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


def _unknown_by_provider(session: Session, since: datetime | None) -> dict[str, Row]:
    """Charges whose real cost is unknown (charged at their hold, see :data:`UNKNOWN_COST`), by provider."""
    query = select(Spend.provider, func.count(), func.sum(Spend.charged_micros)).group_by(Spend.provider)
    query = query.where(
        Spend.state == "settled", Spend.price_version == UNKNOWN_COST, *since_filter(Spend.created_at, since)
    )
    return {
        provider: {"unknown_cost_charges": count, **_money("unknown_cost", int(charged or 0))}
        for provider, count, charged in session.execute(query)
    }


def _money(prefix: str, micros: int) -> Row:
    return {f"{prefix}_micros": micros, f"{prefix}_usd": usd(micros)}


def _keyed(rows: dict[str, Row], key: str) -> list[Row]:
    return [{key: name, **rows[name]} for name in sorted(rows)]


def costs(session: Session, *, since: datetime | None = None) -> Row:
    """Usage (attempts) and money (the spend ledger) by provider, group and environment, with the total.
    ``unknown_cost_*`` flag the charges whose real cost nobody knows (included in ``cost``)."""
    usage = _usage_by_provider(session, since)
    money = _spend_by(session, "provider", since)
    unknown = _unknown_by_provider(session, since)
    empty_usage: Row = {"calls": 0, **dict.fromkeys(USAGE_COLUMNS, 0), "compute_seconds": 0.0}
    empty_money: Row = {"charges": 0, **_money("cost", 0), **_money("held", 0)}
    empty_money.update({"unknown_cost_charges": 0, **_money("unknown_cost", 0)})
    providers = {
        name: {**empty_usage, **usage.get(name, {}), **empty_money, **money.get(name, {}), **unknown.get(name, {})}
        for name in set(usage) | set(money)
    }
    total = {key: sum(row[key] for row in providers.values()) for key in (*empty_usage, *empty_money)}
    for prefix in ("cost", "held", "unknown_cost"):
        total[f"{prefix}_usd"] = usd(total[f"{prefix}_micros"])
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


def _clause(text: str | None) -> str:
    """The first clause of an error (up to its first ``;``), cut at a word boundary when it is long."""
    return _cut((text or "").split(";")[0].strip())


def _cut(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + "…"


def _failed(attempt: Attempt) -> str:
    """Why one attempt did not answer: refused by the breaker or a limit before any call, or failed."""
    clause = _clause(attempt.error)
    if attempt.error_class == "ProviderUnavailable":  # "claude: breaker open (retry in 59.9s)": no call made
        return f"{attempt.provider} refused: {clause.removeprefix(f'{attempt.provider}: ')}"
    return f"{attempt.provider} failed: {attempt.error_class}" + (f" ({clause})" if clause else "")


def fallbacks(session: Session, fleet: Fleet, task_ids: list[str]) -> list[Row]:
    """The tasks among ``task_ids`` that did not run on their ladder's first rung, with what they cost and why:
    the attempts refused or failed, the providers the router passed over (breaker open, over budget, busy, ...)
    and, for a breaker that was open, what opened it."""
    tasks = {t.id: t for t in session.scalars(select(Task).where(Task.id.in_(task_ids)))}
    attempts = session.scalars(select(Attempt).where(Attempt.task_id.in_(task_ids)).order_by(Attempt.attempt))
    by_task: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        by_task.setdefault(attempt.task_id, []).append(attempt)
    openings = _openings(session)
    out: list[Row] = []
    for task_id, task in tasks.items():
        first = fleet.group(task.group).ladder[0]
        tried = by_task.get(task_id, [])
        if task.provider == first or (task.provider is None and not tried):
            continue  # ran on its first choice (after a wait, maybe), or never reached a provider
        why = [_failed(a) for a in tried if a.status == "failed"]
        notes = [note for a in tried if a.route_note for note in a.route_note.split("; ")]
        why += [f"passed over {note}" for note in notes]
        why += _opened_by(openings, tried, notes)
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


def _openings(session: Session) -> dict[str, list[tuple[datetime, str]]]:
    """Per provider, when its breaker opened and why, oldest first."""
    query = select(BreakerTransition.provider, BreakerTransition.at, BreakerTransition.cause)
    found: dict[str, list[tuple[datetime, str]]] = {}
    for provider, at, cause in session.execute(query.where(BreakerTransition.to_state == "open")):
        found.setdefault(provider, []).append((as_utc(at), cause))
    return {provider: sorted(times) for provider, times in found.items()}


def _opened_by(openings: dict[str, list[tuple[datetime, str]]], tried: list[Attempt], notes: list[str]) -> list[str]:
    """For each provider a task found with its breaker open, the cause of the last opening before it tried."""
    refused = [a.error or "" for a in tried if a.error_class == "ProviderUnavailable"]
    open_ones = {text.split(":")[0] for text in notes + refused if "breaker open" in text}
    if not tried:
        return []
    latest = max(as_utc(a.started_at) for a in tried)
    out = []
    for provider in sorted(open_ones):
        before = [cause for at, cause in openings.get(provider, []) if at <= latest]
        if before:
            out.append(f"{provider}'s breaker had opened: {_cut(before[-1])}")
    return out
