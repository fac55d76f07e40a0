"""Settings and fleet of this process, loaded once on first use (never at import)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from switchyard.budgets import BudgetState
from switchyard.fleet import Fleet, load_fleet
from switchyard.settings import Settings, load_settings

if TYPE_CHECKING:
    from providers.base import ProviderResponse
    from routing.breaker import Breakers, PermitRequest
    from routing.ledger import Ledger
    from routing.router import Router

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    settings: Settings
    fleet: Fleet
    _parts: dict[tuple[int, str], Any] = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, compare=False, repr=False)

    @property
    def database_url(self) -> str:
        return self.settings.effective_database_url

    def part(self, name: str, build: Callable[[], T]) -> T:
        """One ``name`` per process (clients are never inherited across a fork), shared by its threads."""
        key = (os.getpid(), name)
        with self._lock:
            if key not in self._parts:
                self._parts[key] = build()
            part: T = self._parts[key]
            return part

    def ledger(self) -> Ledger:
        from routing.ledger import Ledger  # noqa: PLC0415 -- routing imports store, which must not load at import

        return self.part("ledger", lambda: Ledger(self.database_url, self.fleet))

    def breakers(self) -> Breakers:
        from routing.state import breakers_for  # noqa: PLC0415 -- a Redis client is made on first use only

        url = self.settings.effective_state_url
        return self.part("breakers", lambda: breakers_for(url, self.fleet, database_url=self.database_url))

    def router(self) -> Router:
        from routing.router import Router  # noqa: PLC0415
        from routing.sizing import HoldSizes  # noqa: PLC0415

        def build() -> Router:
            ledger = self.ledger()

            def on_cap(capped: list[BudgetState], provider: str) -> None:  # an alert row per budget and window
                ledger.record_caps(capped, provider=provider)

            sizes = HoldSizes.from_settings(self.database_url, self.settings)
            return Router(self.settings, self.fleet, ledger, self.breakers(), on_cap=on_cap, sizes=sizes)

        return self.part("router", build)

    def guard(
        self, *, sleep: Callable[[float], None]
    ) -> Callable[[str, Callable[[], ProviderResponse], PermitRequest | None], ProviderResponse]:
        """The guarded call (retries + breaker + limits) with this fleet's policy and ``sleep``; its first try
        takes the permit the router asked for, when there is one."""
        from routing.guard import guarded_call  # noqa: PLC0415

        breakers, policy = self.breakers(), self.fleet.retry

        def call(provider: str, fn: Callable[[], ProviderResponse], permit: PermitRequest | None) -> ProviderResponse:
            return guarded_call(breakers, provider, fn, policy, sleep=sleep, permit=permit)

        return call


def build_context(settings: Settings | None = None) -> Context:
    settings = settings or load_settings()
    return Context(settings=settings, fleet=load_fleet(settings.fleet_file, settings.fleet_profile))


@lru_cache(maxsize=1)
def get_context() -> Context:
    """The process-wide context, from the environment (``SWITCHYARD_*``)."""
    return build_context()
