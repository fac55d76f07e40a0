"""The thin layer around :func:`routing.route.choose_route`: gather the inputs, decide, hold the money.

``Router.route`` reads every provider's shared state (breaker, in-flight calls, request rate) and the budgets
that apply, asks the pure function for a route, and holds the route's maximum cost in the ledger, atomically
across every budget. A snapshot can go stale between reading and holding; the hold then refuses and the
router chooses again with fresh numbers, so a stale read can cost a retry but never money. When the ledger or
the shared state cannot be reached the router refuses with a short retry (fails closed): nothing is called
without a hold.

The route it returns (:class:`Routed`) carries the breaker permit for its first try, asked for before the hold
so that Redis answers while the ledger writes (:mod:`routing.sent`): the caller takes it for the call
(:func:`routing.guard.guarded_call` does) or cancels it when no call follows.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Protocol

from sqlalchemy import Connection

from providers.registry import available, cli_available
from routing.breaker import PermitRequest
from routing.ledger import Closed
from routing.marks import ModelMark, new_mark
from routing.route import ProviderState, Refusal, Route, RouteRequest, candidates, choose_route
from switchyard import traces
from switchyard.budgets import BudgetState
from switchyard.errors import BudgetRefused, ServiceUnavailable, StateUnavailable
from switchyard.fleet import Fleet
from switchyard.settings import Settings

log = logging.getLogger(__name__)
HOLD_RACES = 3  # a hold refused because others spent first: choose again this many times
UNAVAILABLE_RETRY_S = 5.0  # the ledger or shared state is away: try again this soon (fail closed meanwhile)


class LedgerPort(Protocol):
    def budgets(
        self, *, environment: str, stage: str, group: str, provider: str | None = None
    ) -> list[BudgetState]: ...

    def hold(
        self,
        *,
        task_id: str,
        attempt: int,
        provider: str,
        model: str,
        group: str,
        environment: str,
        stage: str,
        micros: int,
        also: Callable[[Connection], None] | None = None,
    ) -> object: ...

    def settle(self, *, task_id: str, attempt: int, charged_micros: int, price_version: str | None) -> None: ...

    def release(self, *, task_id: str, attempt: int, reason: str) -> bool: ...

    def close_open_call(self, *, task_id: str, attempt: int) -> Closed: ...


class SizesPort(Protocol):
    def output_tokens(self, kind: str, provider: str, model: str, cap: int) -> int: ...


class StatePort(Protocol):
    def snapshot(self, providers: Sequence[str]) -> Mapping[str, ProviderState]: ...

    def request(self, provider: str) -> PermitRequest: ...

    def mark_model(self, provider: str, mark: ModelMark) -> None: ...


@dataclass(frozen=True)
class Routed(Route):
    """A route whose maximum cost is held, with the permit asked for its first try (take it or cancel it)."""

    permit: PermitRequest | None = field(default=None, compare=False, repr=False)

    def cancel(self) -> None:
        """No call will be made on this route: give its permit back (the hold is the caller's to release)."""
        if self.permit is not None:
            self.permit.cancel()


@dataclass(frozen=True)
class Place:
    """Where an attempt's money is counted: the task and attempt, and the scopes its budgets match."""

    task_id: str
    attempt: int
    group: str
    environment: str
    stage: str
    # written in the hold's transaction once the route is held (the attempt's row), given the route
    begin: Callable[[Route, Connection], None] | None = field(default=None, compare=False, repr=False)


@dataclass
class Router:
    settings: Settings
    fleet: Fleet
    ledger: LedgerPort
    state: StatePort
    today: Callable[[], date] = lambda: datetime.now(UTC).date()
    budget_snapshot_s: float = 1.0
    state_snapshot_s: float = 0.25
    clock: Callable[[], float] = time.monotonic
    # a budget's cap ruled out a provider: told once per budget and window (an alert row, see store.alerts)
    on_cap: Callable[[list[BudgetState], str], None] | None = None
    # how much output an api call holds and may produce (routing/sizing.py); None: the kind's whole cap
    sizes: SizesPort | None = None
    _budgets: dict[tuple[str, str, str], tuple[float, list[BudgetState]]] = field(default_factory=dict, repr=False)
    _states: dict[tuple[str, ...], tuple[float, Mapping[str, ProviderState]]] = field(default_factory=dict, repr=False)
    _usable: dict[str, str | None] = field(default_factory=dict, repr=False)
    _candidates: dict[tuple[str, str], tuple[Fleet, list[str]]] = field(default_factory=dict, repr=False)
    _capped: set[tuple[str, str, str, str, int]] = field(default_factory=set, repr=False)

    def provider_states(self, names: Iterable[str]) -> Mapping[str, ProviderState]:
        """Shared state (Redis) plus what only this host knows: credentials and installed CLIs.

        Cached for ``state_snapshot_s``. Like the budget snapshot it only guides the choice: every try still
        takes a permit atomically in Redis (an open breaker or a full provider refuses it there, and the
        attempt moves on), so a snapshot a moment old can cost a fallback, never a call."""
        key = tuple(names)
        now = self.clock()
        cached = self._states.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        shared = self.state.snapshot(key)
        states = {}
        for name in key:
            base = shared.get(name) or ProviderState(name=name)
            states[name] = replace(
                base, unusable=self._unusable(name), cli_available=cli_available(name, self.settings)
            )
        self._states[key] = (now + self.state_snapshot_s, states)
        return states

    def forget_state(self) -> None:
        """Drop the cached breaker snapshot (a try was refused or failed: the next choice reads Redis)."""
        self._states.clear()

    def mark_unusable(self, provider: str, model: str, reason: str) -> None:
        """``model`` of ``provider`` answered 404: every worker passes it over while the provider's entry in the
        fleet file stays as it is now, or until an operator heals it (:mod:`routing.marks`). A state Redis that
        is away costs the mark (the next 404 writes it), never the attempt's fallback."""
        try:
            self.state.mark_model(provider, new_mark(self.fleet, provider, model, reason))
        except StateUnavailable as exc:
            log.warning("could not mark model %s of %s unusable: %s", model, provider, exc)
        self.forget_state()

    def _unusable(self, name: str) -> str | None:
        """:func:`available` for ``name``: it depends on the settings only, which never change, so asked once."""
        if name not in self._usable:
            self._usable[name] = available(name, self.settings)
        return self._usable[name]

    def budget_states(self, request: RouteRequest) -> list[BudgetState]:
        """Every budget this attempt could count against, whichever provider it goes to (one read).

        Cached for ``budget_snapshot_s``: the hold re-checks every cap atomically, so a stale snapshot can
        cost a refused hold (which drops the cache and chooses again), never money."""
        key = (request.environment, request.stage, request.group)
        now = self.clock()
        cached = self._budgets.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        states = self.ledger.budgets(environment=request.environment, stage=request.stage, group=request.group)
        self._budgets[key] = (now + self.budget_snapshot_s, states)
        return states

    def route(self, request: RouteRequest, place: Place, *, only: str | None = None) -> Routed | Refusal:
        """Choose and hold, or say why not. The returned route's maximum cost is held in the ledger.

        ``only`` pins the provider (a handler's follow-up question to a named provider): the same checks of
        breaker, limits and budgets apply, but no other provider is considered."""
        with traces.span(
            "route", kind=request.kind, group=request.group, environment=request.environment, attempt=place.attempt
        ) as span:
            decision = self._route(request, place, only)
            if isinstance(decision, Refusal):
                traces.annotate(span, refused=decision.status, reason=decision.reason)
            else:
                traces.annotate(
                    span, provider=decision.provider, model=decision.model, held_micros=decision.max_cost_micros
                )
            return decision

    def _route(self, request: RouteRequest, place: Place, only: str | None) -> Routed | Refusal:
        fleet = self.fleet if only is None else pinned(self.fleet, request.group, only)
        for _ in range(HOLD_RACES):
            permit: PermitRequest | None = None
            try:
                choice = self._choose(request, fleet)
                if isinstance(choice, Refusal) and (self._states or self._budgets):
                    self.forget_state()  # never refuse (and defer a task) on a cached view: read it fresh
                    self._budgets.clear()
                    choice = self._choose(request, fleet)
                self._tell_caps(choice.capped)
                if isinstance(choice, Refusal):
                    return choice
                permit = self.state.request(choice.provider)  # Redis answers while the ledger holds
                self._hold(choice, place)
                return Routed(**vars(choice), permit=permit)
            except BudgetRefused as exc:
                _cancel(permit)
                self._budgets.clear()
                log.info("hold for %s attempt %s refused, choosing again: %s", place.task_id, place.attempt, exc)
                continue
            except ServiceUnavailable as exc:
                _cancel(permit)
                return Refusal("no_provider", f"routing state unavailable (failing closed): {exc}", UNAVAILABLE_RETRY_S)
            except BaseException:
                _cancel(permit)
                raise
        return Refusal("budget_exhausted", "budgets filled up while choosing (other attempts held first)", 1.0)

    def _tell_caps(self, capped: tuple[tuple[str, BudgetState], ...]) -> None:
        """Pass the budgets whose cap ruled a provider out to ``on_cap``, each once per window and provider in
        this process (the alert row itself is once per window across the fleet). Never fails the route."""
        if self.on_cap is None or not capped:
            return
        window = int(datetime.now(UTC).timestamp() // 3600)  # an hour: the shortest budget window
        if len(self._capped) > 1024:
            self._capped.clear()
        for provider, state in capped:
            seen = (provider, state.scope, state.target, state.window, window)
            if seen in self._capped:
                continue
            try:
                self.on_cap([state], provider)
            except ServiceUnavailable as exc:
                log.warning("budget cap alert of %s not recorded: %s", state.label, exc)
                continue
            self._capped.add(seen)

    def _choose(self, request: RouteRequest, fleet: Fleet) -> Route | Refusal:
        names = self._names(request, fleet)
        providers = self.provider_states(names)
        budgets = self.budget_states(request)
        return choose_route(
            request, fleet, providers, budgets, self.today(), outputs=self._outputs(request, fleet, names)
        )

    def _outputs(self, request: RouteRequest, fleet: Fleet, names: list[str]) -> dict[tuple[str, str], int]:
        """The output tokens each candidate's model would hold for ``request`` (from ``sizes``' cached history)."""
        if self.sizes is None or request.full_output:
            return {}
        cap, group = fleet.kind(request.kind).max_output_tokens, fleet.group(request.group)
        models = [(name, fleet.model_for(group, name)) for name in names]
        return {(name, model): self.sizes.output_tokens(request.kind, name, model, cap) for name, model in models}

    def _names(self, request: RouteRequest, fleet: Fleet) -> list[str]:
        """The providers a route for ``request`` may take, in order; worked out once per group and kind for
        the router's fleet (fleets are immutable)."""
        key = (request.group, request.kind)
        cached = self._candidates.get(key)
        if cached is not None and cached[0] is fleet:
            return cached[1]
        names = [name for name, _ in candidates(fleet, fleet.group(request.group), request.kind)]
        if fleet is self.fleet:
            self._candidates[key] = (fleet, names)
        return names

    def _hold(self, route: Route, place: Place) -> None:
        begin = place.begin
        also = None if begin is None else functools.partial(begin, route)
        self.ledger.hold(
            task_id=place.task_id,
            attempt=place.attempt,
            provider=route.provider,
            model=route.model,
            group=place.group,
            environment=place.environment,
            stage=place.stage,
            micros=route.max_cost_micros,
            also=also,
        )


def _cancel(permit: PermitRequest | None) -> None:
    if permit is not None:
        permit.cancel()


def pinned(fleet: Fleet, group: str, provider: str) -> Fleet:
    """``fleet`` with ``group``'s ladder reduced to ``provider`` and no free fallback: a route to that one only."""
    if provider not in fleet.providers:
        raise ValueError(f"unknown provider {provider!r}")
    groups = [g.model_copy(update={"ladder": [provider]}) if g.name == group else g for g in fleet.groups]
    kinds = {kind: fleet.kind(kind).model_copy(update={"free_fallback": False}) for kind in fleet.group(group).kinds}
    return fleet.model_copy(update={"groups": groups, "kinds": {**fleet.kinds, **kinds}})
