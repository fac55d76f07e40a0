"""Every Redis key Switchyard's shared routing state uses, in one place.

The state Redis (``settings.effective_state_url``, by default the broker) holds, per provider:

    switchyard:{claude}:breaker     hash: state, failures, epoch, open_until, last transition (from, to, cause, at)
    switchyard:{claude}:inflight    sorted set: permit id -> lease expiry (ms, Redis time); calls in flight
    switchyard:{claude}:calls       sorted set: permit id -> start (ms); calls of the last 60 s (requests/minute)
    switchyard:{claude}:probes      sorted set: permit id -> lease expiry (ms); half-open probes out
    switchyard:{claude}:models      hash: model -> JSON mark of a model that answered 404 (:mod:`routing.marks`)

and, apart from the providers' keys:

    switchyard:answer:{task id}:{attempt}   string (JSON): a provider's answer waiting to be stored in SQL
                                            while the database is away (:mod:`routing.parked`)

The provider name is a hash tag (``{claude}``), so all keys of one provider live in one cluster slot and a
single Lua script may touch them all.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

PREFIX = "switchyard"


@dataclass(frozen=True)
class ProviderKeys:
    """The keys of one provider, in the order the breaker scripts take them as ``KEYS``."""

    breaker: str
    inflight: str
    calls: str
    probes: str
    models: str  # unusable models

    def as_list(self) -> list[str]:
        return [self.breaker, self.inflight, self.calls, self.probes, self.models]


@functools.lru_cache(maxsize=256)  # a handful of providers, asked for on every permit and verdict
def provider_keys(provider: str) -> ProviderKeys:
    base = f"{PREFIX}:{{{provider}}}"
    return ProviderKeys(
        breaker=f"{base}:breaker",
        inflight=f"{base}:inflight",
        calls=f"{base}:calls",
        probes=f"{base}:probes",
        models=f"{base}:models",
    )


def answer_key(task_id: str, attempt: int) -> str:
    """Where the answer of (task, attempt) waits while the database is away."""
    return f"{PREFIX}:answer:{task_id}:{attempt}"
