"""The alert rows of budgets (:mod:`store.alerts`): a window that reached its alert line, and a cap that blocked
or degraded a provider. Pure: the fields of the row, built from the budget and its counter."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from store import alerts as alert_rows
from store.budgets import SpendRow
from switchyard.budgets import Budget, BudgetState, CounterKey, as_utc, window_bounds


def _usd(micros: int) -> str:
    return f"${micros / 1e6:,.4f}"


def budget_alert(key: CounterKey, budget: Budget, used: int, task_id: str) -> dict[str, Any]:
    """The alert row of a budget window that reached its alert line (:func:`store.alerts.record`'s fields)."""
    start = as_utc(key.window_start).isoformat()
    return {
        "cause": alert_rows.BUDGET_ALERT,
        "key": f"{alert_rows.BUDGET_ALERT}:{key.label}:{start}",
        "title": f"Budget {key.label} reached its alert line",
        "body": f"{_usd(used)} used of {_usd(budget.cap_micros)} (alert at {_usd(budget.alert_micros or 0)}) "
        f"in the {key.window} window from {start}; at the cap it will {budget.action} paid providers.",
        "payload": {
            "budget": key.label,
            "window_start": start,
            "used_micros": used,
            "alert_micros": budget.alert_micros,
            "cap_micros": budget.cap_micros,
            "action": budget.action,
            "task_id": task_id,
        },
    }


def over_hold_alert(task_id: str, attempt: int, row: SpendRow, charged: int) -> dict[str, Any]:
    """The alert row of a call charged more than its hold. An api call's output limit is the output it held, so
    this must never happen there; an agent CLI checks its budget only between turns and can overshoot it."""
    provider, model, held = row.provider, row.model, row.held_micros
    return {
        "cause": alert_rows.CHARGE_OVER_HOLD,
        "key": f"{alert_rows.CHARGE_OVER_HOLD}:{task_id}:{attempt}",
        "title": f"Task {task_id[:8]} attempt {attempt} on {provider} was charged more than its hold",
        "body": f"charged {_usd(charged)}, held {_usd(held)} ({model}): budgets may pass their caps by the "
        "difference. Over the api transport this is a bug in hold sizing (routing/sizing.py).",
        "payload": {
            "task_id": task_id,
            "attempt": attempt,
            "provider": provider,
            "model": model,
            "held_micros": held,
            "charged_micros": charged,
        },
    }


def cap_alert(state: BudgetState, provider: str, now: datetime) -> dict[str, Any]:
    """The alert row of a budget whose cap blocked or degraded ``provider`` in its current window."""
    start = window_bounds(state.window, now)[0].isoformat()
    verb = "degrades to free providers" if state.action == "degrade" else "blocks paid providers"
    done = "degraded" if state.action == "degrade" else "blocked"
    return {
        "cause": alert_rows.BUDGET_CAP,
        "key": f"{alert_rows.BUDGET_CAP}:{state.label}:{start}",
        "title": f"Budget {state.label} reached its cap: {provider} {done}",
        "body": f"{_usd(state.used_micros)} used of {_usd(state.cap_micros)} in the {state.window} window from "
        f"{start}; the cap {verb} until the window ends (`switchyard budget set` raises it).",
        "payload": {
            "budget": state.label,
            "window_start": start,
            "used_micros": state.used_micros,
            "cap_micros": state.cap_micros,
            "action": state.action,
            "provider": provider,
        },
    }
