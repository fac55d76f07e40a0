"""Plain names the database holds: a task's statuses and the causes of alerts. Tuples and strings only, so
the CLI can name them in its help text without importing SQLAlchemy (:mod:`store.models` and
:mod:`store.alerts` re-export them under their old names)."""

TERMINAL_STATUSES = ("succeeded", "failed", "rejected", "budget_exhausted", "no_provider", "cancelled")
ACTIVE_STATUSES = ("queued", "running", "deferred")

BUDGET_ALERT = "budget_alert"  # a budget's window reached its alert line
BUDGET_CAP = "budget_cap"  # a budget's cap blocked (or degraded) a paid provider in its window
BREAKER_OPENED = "breaker_opened"
BREAKER_CLOSED = "breaker_closed"
PROVIDER_DISABLED = "provider_disabled"  # a 401/403: no call until an operator enables it
TASK_FAILED = "task_failed"  # every rung the task could reach failed
DAILY_REPORT = "daily_report"
CHARGE_OVER_HOLD = "charge_over_hold"  # a call was charged more than its hold: a bug, or an agent CLI's overshoot
ALERT_CAUSES = (
    *(BUDGET_ALERT, BUDGET_CAP, BREAKER_OPENED, BREAKER_CLOSED, PROVIDER_DISABLED, TASK_FAILED, DAILY_REPORT),
    CHARGE_OVER_HOLD,
)
