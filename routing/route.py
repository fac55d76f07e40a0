"""The route for one attempt, chosen by a pure function from snapshots the caller gathered.

No I/O happens here: the attempt loop reads the breaker states and concurrency (Redis), the budgets (SQL) and
the output each candidate's model holds (:mod:`routing.sizing`), then :func:`choose_route` decides. The
ledger's atomic hold confirms the budget part afterwards, so a snapshot that went stale between the two can
never overspend: it can only be refused.

Candidates are the group's ladder, then (when the kind allows it) the free providers outside it. Each one
is usable or passed over with its reasons. A reason is permanent for this task (excluded, avoided, no key,
disabled, no transport, its model marked unusable by a 404 under the fleet in force: :mod:`routing.marks`)
or says how long to wait (breaker open, busy, rate, budget window): the refusal's ``retry_in_s`` is the
shortest wait, so the caller can defer instead of giving up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Literal

from routing.estimate import max_cost_micros
from routing.marks import ModelMark, mark_for
from switchyard.budgets import BudgetState
from switchyard.errors import ConfigError
from switchyard.fleet_models import Fleet, GroupConfig, Transport
from switchyard.pricing import micros_to_usd

BreakerState = Literal["closed", "open", "half_open", "disabled"]
Terminal = Literal["no_provider", "budget_exhausted"]
SOON_S = 1.0  # busy or a half-open probe under way: a slot frees up quickly
RATE_WINDOW_S = 60.0  # requests per minute: the oldest call leaves the window within a minute


@dataclass(frozen=True)
class ProviderState:
    """One provider as the workers share it, read just before choosing.

    The limits travel with the snapshot: the gatherer copies ``max_in_flight`` and ``requests_per_minute``
    from the provider's :class:`~switchyard.fleet_models.ProviderConfig` (the router reads them from here).
    """

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
    unusable_models: tuple[ModelMark, ...] = ()  # models that answered 404 (honoured while their mark is in force)


@dataclass(frozen=True)
class RouteRequest:
    kind: str
    group: str
    environment: str
    stage: str
    prompt_chars: int  # system + prompt, in characters (the token estimate is derived from it)
    excluded: frozenset[str] = frozenset()  # providers that already failed this task in this run
    avoid: frozenset[str] = frozenset()  # providers this task must not use (a review avoids its implementer)
    avoid_why: tuple[tuple[str, str], ...] = ()  # (provider, why it is avoided), for the reason shown
    full_output: bool = False  # hold (and allow) the kind's whole output cap: the retry of an answer cut short


@dataclass(frozen=True)
class Route:
    provider: str
    model: str
    transport: Literal["api", "cli"]
    max_cost_micros: int
    rung: int  # 1-based position in the group's ladder; 0 for the free fallback outside the ladder
    degraded: bool = False  # chosen because a budget's `degrade` action ruled out paying providers
    passed_over: tuple[str, ...] = ()  # "claude: breaker open (retry in 42s)", one per provider skipped
    notes: tuple[str, ...] = ()  # how the chosen provider differs from the fleet file ("cli not installed, api")
    capped: tuple[tuple[str, BudgetState], ...] = ()  # (provider, budget) a budget's cap ruled out (an alert)
    # the output tokens held, passed as the call's limit (None: the kind's cap, e.g. a route rebuilt from a row)
    max_output_tokens: int | None = None


@dataclass(frozen=True)
class Refusal:
    """No provider now. ``retry_in_s`` is when trying again could work (None: it never will for this task)."""

    status: Terminal
    reason: str
    retry_in_s: float | None = None
    passed_over: tuple[str, ...] = field(default_factory=tuple)
    capped: tuple[tuple[str, BudgetState], ...] = ()  # (provider, budget) a budget's cap ruled out (an alert)


@dataclass(frozen=True)
class _Why:
    """One reason a candidate cannot run the attempt now; ``wait_s`` None means never, for this task."""

    text: str
    wait_s: float | None
    budget: Literal["block", "degrade"] | None = None
    capped_by: BudgetState | None = None


@dataclass(frozen=True)
class _Ask:
    """What stays the same across the candidates of one choice."""

    request: RouteRequest
    fleet: Fleet
    group: GroupConfig
    budgets: Sequence[BudgetState]
    today: date
    outputs: Mapping[tuple[str, str], int] = field(default_factory=dict)


def candidates(fleet: Fleet, group: GroupConfig, kind: str) -> list[tuple[str, int]]:
    """(provider, rung) in the order they are tried: the ladder, then free providers when ``kind`` allows."""
    ladder = [(name, rung) for rung, name in enumerate(group.ladder, start=1)]
    if not fleet.kind(kind).free_fallback:
        return ladder
    extra = [(name, 0) for name, config in fleet.providers.items() if config.free and name not in group.ladder]
    return ladder + extra


def _secs(seconds: float) -> str:
    return f"{math.ceil(seconds)}s"


def _usd(micros: int) -> str:
    return f"${micros_to_usd(micros):.4f}"


def _permanent(name: str, request: RouteRequest, state: ProviderState | None) -> ProviderState | _Why:
    """The provider's state when nothing rules it out for good, else why it never can for this task."""
    if name in request.excluded:
        return _Why("already failed this task", None)
    if name in request.avoid:
        why = dict(request.avoid_why).get(name, "the task's avoid_providers (--avoid) name it")
        return _Why(f"must not be used by this task: {why}", None)
    if state is None:
        return _Why("unusable (no state reported)", None)
    if state.unusable is not None:
        return _Why(f"unusable ({state.unusable})", None)
    if state.breaker == "disabled":
        return _Why("breaker disabled until an operator enables it", None)
    return state


def _transient(state: ProviderState) -> list[_Why]:
    whys: list[_Why] = []
    if state.breaker == "open":
        wait = max(state.retry_in_s, SOON_S)
        whys.append(_Why(f"breaker open (retry in {_secs(wait)})", wait))
    if state.breaker == "half_open" and not state.probe_free:
        whys.append(_Why(f"breaker half-open, probe under way (retry in {_secs(SOON_S)})", SOON_S))
    if state.in_flight >= state.max_in_flight:
        text = f"busy ({state.in_flight}/{state.max_in_flight} in flight, retry in {_secs(SOON_S)})"
        whys.append(_Why(text, SOON_S))
    rpm = state.requests_per_minute
    if rpm is not None and state.calls_last_minute >= rpm:
        text = f"rate limit ({state.calls_last_minute}/{rpm} calls in the last minute, retry in 60s)"
        whys.append(_Why(text, RATE_WINDOW_S))
    return whys


def applies(budget: BudgetState, request: RouteRequest, provider: str) -> bool:
    """Whether ``budget`` counts an attempt of ``request`` on ``provider`` ("*" matches every target)."""
    scope, target = budget.scope, budget.target
    if scope == "all" or target == "*":
        return True
    if scope == "environment":
        return target == request.environment
    if scope == "stage":
        return target == request.stage
    if scope == "group":
        return target == request.group
    return target == provider


def _over(budget: BudgetState, cost: int, free: bool) -> bool:
    if budget.action == "degrade":
        return not free and budget.used_micros + cost > budget.cap_micros
    return budget.used_micros >= budget.cap_micros or budget.used_micros + cost > budget.cap_micros


def _budget_whys(ask: _Ask, provider: str, cost: int, free: bool) -> list[_Why]:
    whys: list[_Why] = []
    for budget in ask.budgets:
        if applies(budget, ask.request, provider) and _over(budget, cost, free):
            wait = max(budget.window_ends_in_s, SOON_S)
            verb = "degrades to free providers" if budget.action == "degrade" else "blocks"
            text = (
                f"budget {budget.label} {verb}: {_usd(budget.used_micros)} used of {_usd(budget.cap_micros)}, "
                f"this attempt may cost {_usd(cost)} (window ends in {_secs(wait)})"
            )
            whys.append(_Why(text, wait, budget.action, budget))
    return whys


def _transport(name: str, fleet: Fleet, group: GroupConfig, state: ProviderState) -> tuple[Transport, str] | _Why:
    """The transport to use and a note when it differs from the group's choice."""
    offered = fleet.providers[name].transports
    wanted = group.transports.get(name, "api")
    if wanted == "cli" and not state.cli_available:
        if "api" in offered:
            return "api", "cli not installed, using api"
        return _Why("cli not installed and no api transport", None)
    if wanted not in offered:
        return _Why(f"no {wanted} transport", None)
    return wanted, ""


def _assess(ask: _Ask, name: str, rung: int, state: ProviderState | None) -> Route | list[_Why]:
    """The route on ``name`` (without ``passed_over``), or every reason it cannot be used now."""
    usable = _permanent(name, ask.request, state)
    if isinstance(usable, _Why):
        return [usable]
    transport = _transport(name, ask.fleet, ask.group, usable)
    if isinstance(transport, _Why):
        return [transport]
    model = ask.fleet.model_for(ask.group, name)
    if usable.unusable_models:
        mark = mark_for(usable.unusable_models, model, ask.fleet, name)
        if mark is not None:
            return [_Why(f"model {model} unusable ({mark.reason}; `switchyard breaker heal {name}` once fixed)", None)]
    try:
        price = ask.fleet.price(name, model, ask.today)[1]
    except ConfigError:
        return [_Why(f"no price for {model} on {ask.today.isoformat()}", None)]
    output = _held_output(ask, name, model, transport[0])
    cost = max_cost_micros(ask.request.prompt_chars, output, price)
    whys = _transient(usable) + _budget_whys(ask, name, cost, ask.fleet.providers[name].free)
    if whys:
        return whys
    notes = (f"{name}: {transport[1]}",) if transport[1] else ()
    return Route(name, model, transport[0], cost, rung, notes=notes, max_output_tokens=output)


def _held_output(ask: _Ask, name: str, model: str, transport: Transport) -> int:
    """The output tokens a call on ``name`` holds: the size ``outputs`` gives (:mod:`routing.sizing`) over the api
    transport, which passes it as the call's limit; the kind's whole cap over an agent CLI (which cannot limit
    its output), for the retry of an answer cut short, or when no size is known."""
    cap = ask.fleet.kind(ask.request.kind).max_output_tokens
    if transport != "api" or ask.request.full_output:
        return cap
    return min(cap, ask.outputs.get((name, model), cap))


def _wait(whys: list[_Why]) -> float | None:
    """How long until a candidate could work: never if one reason is permanent, else its longest wait."""
    waits = [why.wait_s for why in whys]
    return None if None in waits else max(w for w in waits if w is not None)


def _capped(refused: list[tuple[str, list[_Why]]]) -> tuple[tuple[str, BudgetState], ...]:
    return tuple((name, why.capped_by) for name, whys in refused for why in whys if why.capped_by is not None)


def _refusal(request: RouteRequest, refused: list[tuple[str, list[_Why]]], passed_over: tuple[str, ...]) -> Refusal:
    on_budget = any(all(why.budget for why in whys) for _, whys in refused)
    waits = [w for w in (_wait(whys) for _, whys in refused) if w is not None]
    lead = f"no provider within budget for {request.kind}" if on_budget else f"no provider for {request.kind}"
    return Refusal(
        status="budget_exhausted" if on_budget else "no_provider",
        reason=f"{lead}: {'; '.join(passed_over)}",
        retry_in_s=min(waits) if waits else None,
        passed_over=passed_over,
        capped=_capped(refused),
    )


def choose_route(
    request: RouteRequest,
    fleet: Fleet,
    providers: Mapping[str, ProviderState],
    budgets: Sequence[BudgetState],
    today: date,
    *,
    outputs: Mapping[tuple[str, str], int] | None = None,
) -> Route | Refusal:
    """The provider, model, transport and maximum cost for the next attempt of ``request``, or why none.

    ``today`` picks the prices in force. ``outputs``: the output tokens to hold per (provider, model) over the
    api transport (:mod:`routing.sizing`); one not given holds the kind's cap. A route chosen after a
    ``degrade`` budget ruled out an earlier paying candidate has ``degraded`` set. Raises :class:`ConfigError`
    for a group the fleet does not have.
    """
    ask = _Ask(request, fleet, fleet.group(request.group), budgets, today, outputs or {})
    refused: list[tuple[str, list[_Why]]] = []
    passed_over: list[str] = []
    for name, rung in candidates(fleet, ask.group, request.kind):
        result = _assess(ask, name, rung, providers.get(name))
        if isinstance(result, Route):
            if not refused:  # the first candidate: nothing passed over, nothing degraded
                return result
            degraded = any(why.budget == "degrade" for _, whys in refused for why in whys)
            return replace(result, degraded=degraded, passed_over=tuple(passed_over), capped=_capped(refused))
        refused.append((name, result))
        passed_over.append(f"{name}: {', '.join(why.text for why in result)}")
    return _refusal(request, refused, tuple(passed_over))
