"""Which budgets are in force and which counters a hold touches: pure functions, no clock, no database.

The effective budgets are the fleet file's, overlaid by the operators' overrides (``switchyard budget set``),
keyed by (scope, target, window): an override replaces the file's budget with the same key or adds one.

A budget counts money per **counter**: (scope, concrete target, window, window start). A budget on scope
``all`` has one counter per window; a budget whose target is ``*`` on another scope counts each environment,
stage, group or provider separately (the counter's target is the concrete name); a named target counts only
that one. When a ``*`` budget and a named one share a counter (``provider=*`` and ``provider=claude``, same
window), the named one is the more specific and decides the cap, the alert and the action.

Windows are calendar hours, days and months in UTC.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, cast, get_args

from switchyard.errors import InputError
from switchyard.fleet_models import SCRATCH_ENVIRONMENT, BudgetConfig, Fleet, Scope, Window

MICROS = 1_000_000
SCOPES: tuple[str, ...] = get_args(Scope)
WINDOWS: tuple[str, ...] = get_args(Window)
ACTIONS = ("block", "degrade")
Action = Literal["block", "degrade"]
Source = Literal["file", "override"]


@dataclass(frozen=True)
class BudgetState:
    """One budget in its current window. ``target`` is concrete ("dev1", "claude") or "*" for scope all."""

    scope: Literal["all", "environment", "stage", "group", "provider"]
    target: str
    window: Literal["hour", "day", "month"]
    cap_micros: int
    used_micros: int  # held + settled in the current window
    alert_micros: int | None = None
    action: Literal["block", "degrade"] = "block"
    window_ends_in_s: float = 3600.0

    @property
    def remaining_micros(self) -> int:
        return max(0, self.cap_micros - self.used_micros)

    @property
    def label(self) -> str:
        target = "" if self.scope == "all" else f"={self.target}"
        return f"{self.scope}{target}/{self.window}"


def to_micros(usd: float) -> int:
    return round(usd * MICROS)


@dataclass(frozen=True)
class Budget:
    """One effective budget. ``target`` is ``*`` or a name, as declared (not yet made concrete)."""

    scope: Scope
    target: str
    window: Window
    cap_micros: int
    alert_micros: int | None = None
    action: Action = "block"
    source: Source = "file"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.scope, self.target, self.window)

    @classmethod
    def from_config(cls, config: BudgetConfig) -> Budget:
        alert = None if config.alert_usd is None else to_micros(config.alert_usd)
        return cls(config.scope, config.target, config.window, to_micros(config.cap_usd), alert, config.action)


@dataclass(frozen=True, order=True)
class CounterKey:
    """One budget's counter in one window; ordered, so holds lock counters in the same order everywhere."""

    scope: str
    target: str
    window: str
    window_start: datetime

    def to_json(self) -> list[str]:
        return [self.scope, self.target, self.window, self.window_start.isoformat()]

    @classmethod
    def from_json(cls, value: list[str]) -> CounterKey:
        scope, target, window, start = value
        return cls(scope, target, window, as_utc(datetime.fromisoformat(start)))

    @property
    def label(self) -> str:
        return label(self.scope, self.target, self.window)


@dataclass(frozen=True)
class Alert:
    """A budget reached its alert line in one window (recorded once per budget and window)."""

    budget: str
    scope: str
    target: str
    window: str
    window_start: datetime
    used_micros: int
    alert_micros: int
    cap_micros: int
    task_id: str | None
    created_at: datetime


def label(scope: str, target: str, window: str) -> str:
    """``all/day``, ``provider=claude/hour``: how messages and logs name a budget."""
    return f"{scope}/{window}" if scope == "all" else f"{scope}={target}/{window}"


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive value (SQLite hands those back) is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def window_bounds(window: str, now: datetime) -> tuple[datetime, datetime]:
    """The calendar window (UTC) that ``now`` falls in, as [start, end)."""
    now = as_utc(now)
    if window == "hour":
        start = now.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    if window == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if window == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return start, end
    raise ValueError(f"unknown window {window!r}; use one of {', '.join(WINDOWS)}")


def effective(file_budgets: Iterable[BudgetConfig], overrides: Iterable[Budget]) -> list[Budget]:
    """The fleet file's budgets, each replaced by the override with its key; overrides for new keys last."""
    merged: dict[tuple[str, str, str], Budget] = {}
    for config in file_budgets:
        merged[(config.scope, config.target, config.window)] = Budget.from_config(config)
    for override in overrides:
        merged[override.key] = override
    return list(merged.values())


def applicable(
    budgets: Iterable[Budget], *, environment: str, stage: str, group: str, providers: Iterable[str]
) -> dict[tuple[str, str, str], Budget]:
    """Every budget that counts a call from this place, by (scope, concrete target, window).

    One provider for a hold; several for a snapshot the router reads before it chooses among them."""
    names: Mapping[str, tuple[str, ...]] = {
        "environment": (environment,),
        "stage": (stage,),
        "group": (group,),
        "provider": tuple(providers),
    }
    found: dict[tuple[str, str, str], Budget] = {}
    for budget in budgets:
        targets = ("*",) if budget.scope == "all" else names[budget.scope]
        for target in targets:
            if budget.target not in ("*", target):
                continue
            key = (budget.scope, target, budget.window)
            if key not in found or budget.target != "*":  # a named budget beats the wildcard one
                found[key] = budget
    return found


def counter_keys(budgets: Mapping[tuple[str, str, str], Budget], now: datetime) -> dict[CounterKey, Budget]:
    """The counters of ``budgets`` in the windows ``now`` falls in, in lock order."""
    keys = {
        CounterKey(scope, target, window, window_bounds(window, now)[0]): budget
        for (scope, target, window), budget in budgets.items()
    }
    return dict(sorted(keys.items()))


def state(key: CounterKey, budget: Budget, used_micros: int, now: datetime) -> BudgetState:
    """The router's view of one counter."""
    ends = window_bounds(key.window, now)[1]
    return BudgetState(
        scope=budget.scope,
        target=key.target,
        window=budget.window,
        cap_micros=budget.cap_micros,
        used_micros=used_micros,
        alert_micros=budget.alert_micros,
        action=budget.action,
        window_ends_in_s=max(0.0, (ends - as_utc(now)).total_seconds()),
    )


def check_override(
    fleet: Fleet,
    *,
    scope: str,
    target: str,
    window: str,
    cap_usd: float,
    alert_usd: float | None,
    action: str,
) -> Budget:
    """An operator's budget, checked against the fleet; :class:`InputError` says what is wrong and how to fix it."""
    if scope not in SCOPES:
        raise InputError(f"unknown scope {scope!r}; use one of: {', '.join(SCOPES)}")
    if window not in WINDOWS:
        raise InputError(f"unknown window {window!r}; use one of: {', '.join(WINDOWS)}")
    if action not in ACTIONS:
        raise InputError(f"unknown action {action!r}; use one of: {', '.join(ACTIONS)}")
    _check_target(fleet, scope, target)
    if not math.isfinite(cap_usd) or cap_usd < 0:
        raise InputError(f"--cap must be a number of US dollars, zero or more; got {cap_usd}")
    if alert_usd is not None and (not math.isfinite(alert_usd) or alert_usd < 0):
        raise InputError(f"--alert must be a number of US dollars, zero or more; got {alert_usd}")
    if alert_usd is not None and alert_usd > cap_usd:
        raise InputError(f"--alert {alert_usd} is above --cap {cap_usd}; the alert must come at or before the cap")
    alert = None if alert_usd is None else to_micros(alert_usd)
    return Budget(
        cast(Scope, scope), target, cast(Window, window), to_micros(cap_usd), alert, cast(Action, action), "override"
    )


def _check_target(fleet: Fleet, scope: str, target: str) -> None:
    if scope == "all":
        if target != "*":
            raise InputError("scope 'all' takes no --target; leave it out")
        return
    known = {
        "environment": [*fleet.environments.names, SCRATCH_ENVIRONMENT],  # smoke caps its scratch environment
        "stage": list(fleet.environments.stages),
        "group": [group.name for group in fleet.groups],
        "provider": sorted(fleet.providers),
    }[scope]
    if target != "*" and target not in known:
        raise InputError(f"unknown {scope} {target!r}; use '*' (each {scope}) or one of: {', '.join(known)}")
