"""The route for one attempt, chosen by a pure function from snapshots the caller gathered.

No I/O happens here: the attempt loop reads the breaker states and concurrency (Redis) and the budgets
(SQL), then :func:`choose_route` decides. The ledger's atomic hold confirms the budget part afterwards, so
a snapshot that went stale between the two can never overspend: it can only be refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from switchyard.fleet_models import Fleet

BreakerState = Literal["closed", "open", "half_open", "disabled"]
Terminal = Literal["no_provider", "budget_exhausted"]


@dataclass(frozen=True)
class ProviderState:
    """One provider as the workers share it, read just before choosing."""

    name: str
    unusable: str | None = None  # why it cannot be used at all (no key, CLI not installed); None: usable
    breaker: BreakerState = "closed"
    probe_free: bool = True  # half-open: the single probe has not been taken yet
    retry_in_s: float = 0.0  # open: seconds until it turns half-open
    in_flight: int = 0
    max_in_flight: int = 1
    calls_last_minute: int = 0
    requests_per_minute: int | None = None
    cli_available: bool = False  # the agent CLI for this provider is installed


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


@dataclass(frozen=True)
class RouteRequest:
    kind: str
    group: str
    environment: str
    stage: str
    prompt_chars: int  # system + prompt, in characters (the token estimate is derived from it)
    excluded: frozenset[str] = frozenset()  # providers that already failed this task in this run
    avoid: frozenset[str] = frozenset()  # providers this task must not use (a review avoids its implementer)


@dataclass(frozen=True)
class Route:
    provider: str
    model: str
    transport: Literal["api", "cli"]
    max_cost_micros: int
    rung: int  # 1-based position in the group's ladder; 0 for the free fallback outside the ladder
    degraded: bool = False  # chosen because a budget's `degrade` action ruled out paying providers
    passed_over: tuple[str, ...] = ()  # "claude: breaker open (retry in 42s)", one per provider skipped


@dataclass(frozen=True)
class Refusal:
    """No provider now. ``retry_in_s`` is when trying again could work (None: it never will for this task)."""

    status: Terminal
    reason: str
    retry_in_s: float | None = None
    passed_over: tuple[str, ...] = field(default_factory=tuple)


def choose_route(
    request: RouteRequest,
    fleet: Fleet,
    providers: Mapping[str, ProviderState],
    budgets: Sequence[BudgetState],
    today: date,
) -> Route | Refusal:
    """The provider, model, transport and maximum cost for the next attempt of ``request``, or why none."""
    raise NotImplementedError
