"""What the shared breakers hand out and report: permits and denials, per-provider limits, transitions and
statuses (:mod:`routing.breaker` makes them; the guard, the router, ``status`` and the API read them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from routing.marks import ModelMark, in_force
from routing.route import BreakerState
from switchyard.fleet_models import Fleet

DenialReason = Literal["disabled", "open", "probing", "busy", "rate", "suspect"]
BUSY_RETRY_S = 1.0  # slots and probes usually come back when a call ends, long before their lease expires
LEASE_MARGIN_S = 30.0  # an in-flight slot outlives the provider timeout by this much before it is reclaimed
OnTransition = Callable[["Transition"], None]


@dataclass(frozen=True)
class ProviderLimits:
    """Concurrency and rate of one provider across the fleet; ``lease_s`` bounds how long one call holds a slot."""

    max_in_flight: int = 4
    requests_per_minute: int | None = None
    lease_s: float = 150.0


@dataclass(frozen=True)
class Permit:
    """Leave to make one call. ``probe`` is true for the half-open probe; ``epoch`` ties the verdict to it."""

    provider: str
    id: str
    epoch: int
    probe: bool


@dataclass(frozen=True)
class Denial:
    """No call now. ``retry_in_s`` is when asking again can work; None: not until an operator enables it."""

    provider: str
    reason: DenialReason
    retry_in_s: float | None

    @property
    def message(self) -> str:
        texts = {
            "disabled": f"disabled; fix its credentials, then run `switchyard breaker enable {self.provider}`",
            "open": "breaker open",
            "probing": "breaker half-open and its probe is out",
            "busy": "all in-flight slots taken",
            "rate": "requests per minute reached",
            "suspect": "failing: its last calls failed and the calls in flight could open the breaker",
        }
        when = "" if self.retry_in_s is None else f" (retry in {self.retry_in_s:.1f}s)"
        return f"{self.provider}: {texts[self.reason]}{when}"


@dataclass(frozen=True)
class Transition:
    provider: str
    from_state: str
    to_state: str
    cause: str
    at: datetime


@dataclass(frozen=True)
class BreakerStatus:
    """Everything known about one provider's shared state, for the router, `status` and the API."""

    provider: str
    state: BreakerState
    failures: int
    retry_in_s: float
    probe_free: bool
    in_flight: int
    limits: ProviderLimits
    calls_last_minute: int
    last_transition: Transition | None
    last_failure: str | None
    unusable_models: tuple[ModelMark, ...] = ()

    def as_dict(self, fleet: Fleet | None = None) -> dict[str, Any]:
        """The status for JSON; each unusable model says whether its mark is ``in_force`` under ``fleet``
        (:func:`routing.marks.in_force`; without a fleet every mark counts as in force)."""
        last = self.last_transition
        return {
            "provider": self.provider,
            "state": self.state,
            "failures": self.failures,
            "retry_in_s": round(self.retry_in_s, 3),
            "probe_free": self.probe_free,
            "in_flight": self.in_flight,
            "max_in_flight": self.limits.max_in_flight,
            "calls_last_minute": self.calls_last_minute,
            "requests_per_minute": self.limits.requests_per_minute,
            "last_transition": None
            if last is None
            else {"from": last.from_state, "to": last.to_state, "cause": last.cause, "at": last.at.isoformat()},
            "last_failure": self.last_failure,
            "unusable_models": [
                mark.as_dict(in_force=fleet is None or in_force(mark, fleet, self.provider))
                for mark in self.unusable_models
            ],
        }


def limits_from_fleet(fleet: Fleet) -> dict[str, ProviderLimits]:
    lease = fleet.limits.provider_timeout_s + LEASE_MARGIN_S
    return {name: ProviderLimits(p.max_in_flight, p.requests_per_minute, lease) for name, p in fleet.providers.items()}
