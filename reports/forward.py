"""Where the money goes next: each budget's window (cap, alert line, used, held, remaining, alerts fired, action),
the spend rate over the trailing hours and what it leads to (the window's and the month's end, the moment the
cap is reached), each budget's burn-down, the period's peak hour and its ten most expensive tasks.

Rates and projections count what the budgets count: charged plus still held, at the hold's time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from reports.period import Period, month_start
from reports.rollup import hour_costs, key_text, time_key
from store.costs import budget_status
from store.models import BudgetAlert, ReportTask, Spend, Task
from store.queries import as_utc
from switchyard.budgets import window_bounds
from switchyard.fleet import Fleet

Row = dict[str, Any]
SCOPE_COLUMNS = {
    "environment": Spend.environment,
    "stage": Spend.stage,
    "group": Spend.group,
    "provider": Spend.provider,
}
USED = case((Spend.state == "settled", Spend.charged_micros), (Spend.state == "held", Spend.held_micros), else_=0)


def _scope(scope: str, target: str) -> list[ColumnElement[bool]]:
    if scope == "all" or target == "*":
        return []
    return [SCOPE_COLUMNS[scope] == target]


def _used(session: Session, where: list[ColumnElement[bool]], since: datetime, until: datetime) -> int:
    query = select(func.coalesce(func.sum(USED), 0)).where(
        *where, Spend.created_at >= as_utc(since), Spend.created_at < as_utc(until)
    )
    return int(session.execute(query).scalar_one())


def _alerts_fired(session: Session, row: Row, start: datetime) -> int:
    query = select(func.count()).where(
        BudgetAlert.scope == row["scope"],
        BudgetAlert.target == row["target"],
        BudgetAlert.window == row["window"],
        BudgetAlert.window_start == as_utc(start),
    )
    return int(session.execute(query).scalar_one())


def budget_forward(session: Session, fleet: Fleet, now: datetime) -> list[Row]:
    """One row per budget in force and target, with its trailing rate and projections."""
    hours = fleet.reports.trailing_hours
    month_end = window_bounds("month", now)[1]
    out = []
    for row in budget_status(session, fleet, now=now):
        where = _scope(row["scope"], row["target"])
        start, end = window_bounds(row["window"], now)
        rate = _used(session, where, now - timedelta(hours=hours), now) / hours  # micro-dollars per hour
        left_h = (end - now).total_seconds() / 3600
        month_used = _used(session, where, month_start(now), now + timedelta(microseconds=1))
        used, cap = row["used_micros"], row["cap_micros"]
        reach = _reach(used, cap, rate, now)
        out.append(
            {
                **{k: row[k] for k in ("scope", "target", "window", "action", "since", "until")},
                **{k: row[k] for k in ("cap_micros", "alert_micros", "used_micros", "remaining_micros")},
                "held_micros": round(row["held_usd"] * 1_000_000),
                "used_pct": round(100 * used / cap, 1) if cap else 100.0,
                "alerts_fired": _alerts_fired(session, row, start),
                "rate_micros_per_h": round(rate),
                "projected_window_micros": round(used + rate * left_h),
                "projected_month_micros": round(month_used + rate * (month_end - now).total_seconds() / 3600),
                "cap_reached_at": None if reach is None else reach.isoformat(),
                "cap_reached_in_window": reach is not None and reach < end,
                "burn_down": _burn_down(
                    session, where, window=row["window"], start=start, end=end, now=now, cap=cap, rate=rate
                ),
            }
        )
    return out


def _reach(used: int, cap: int, rate: float, now: datetime) -> datetime | None:
    """When ``used`` reaches ``cap`` at ``rate`` per hour: now when it has, None when it never will."""
    if used >= cap:
        return now
    if rate <= 0:
        return None
    hours = (cap - used) / rate
    return now + timedelta(hours=hours) if hours < 24 * 366 else None


def _burn_down(
    session: Session,
    where: list[ColumnElement[bool]],
    *,
    window: str,
    start: datetime,
    end: datetime,
    now: datetime,
    cap: int,
    rate: float,
) -> list[Row]:
    """What is left of the cap over the window: at its start, after each bucket of spend, projected to its end."""
    dialect = session.get_bind().dialect.name
    bucket = time_key(Spend.created_at, "minute" if window == "hour" else "hour", dialect)
    query = select(bucket.label("at"), func.sum(USED)).where(
        *where, Spend.created_at >= as_utc(start), Spend.created_at < as_utc(now + timedelta(microseconds=1))
    )
    points = [{"at": start.isoformat(), "remaining_micros": cap, "line": "actual"}]
    spent = 0
    for at, micros in session.execute(query.group_by(bucket).order_by(bucket)):
        spent += int(micros or 0)
        points.append({"at": _bucket_end(at, window).isoformat(), "remaining_micros": cap - spent, "line": "actual"})
    points.append({"at": now.isoformat(), "remaining_micros": cap - spent, "line": "actual"})
    left_h = (end - now).total_seconds() / 3600
    points.append({"at": now.isoformat(), "remaining_micros": cap - spent, "line": "projected"})
    points.append({"at": end.isoformat(), "remaining_micros": round(cap - spent - rate * left_h), "line": "projected"})
    return points


def _bucket_end(value: Any, window: str) -> datetime:
    moment = datetime.fromisoformat(key_text("minute" if window == "hour" else "hour", value).replace(" ", "T"))
    moment = moment.replace(tzinfo=UTC)
    return moment + (timedelta(minutes=1) if window == "hour" else timedelta(hours=1))


def peak_hour(session: Session, period: Period) -> Row | None:
    """The period's hour with the highest cost (UTC), or None when nothing cost anything."""
    found = sorted(hour_costs(session, period), key=lambda row: (-row[1], row[0]))
    if not found or not found[0][1]:
        return None
    hour, cost, attempts = found[0]
    return {"hour": hour, "cost_micros": cost, "attempts": attempts}


def top_tasks(session: Session, period: Period, limit: int = 10) -> list[Row]:
    """The ``limit`` dearest tasks created in the period (each with all its settled charges and its ledger rows,
    ``report_tasks``), dearest first."""
    table = ReportTask.__table__
    in_period = (table.c.created_at >= as_utc(period.since), table.c.created_at < as_utc(period.until))
    per_task = (
        select(table.c.task_id, table.c.cost_micros.label("cost"), table.c.attempts)
        .where(*in_period, table.c.cost_micros > 0)
        .order_by(table.c.cost_micros.desc(), table.c.task_id)
        .limit(limit)
        .subquery()
    )
    query = select(per_task, Task.kind, Task.environment, Task.stage, Task.status, Task.provider, Task.title)
    query = query.join(Task, Task.id == per_task.c.task_id).order_by(per_task.c.cost.desc(), per_task.c.task_id)
    return [
        {
            "id": r.task_id,
            "kind": r.kind,
            "env": r.environment,
            "stage": r.stage,
            "status": r.status,
            "provider": r.provider,
            "title": r.title,
            "attempts": int(r.attempts or 0),
            "cost_micros": int(r.cost),
        }
        for r in session.execute(query)
    ]
