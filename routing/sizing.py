"""How much output an api call's hold covers: a high percentile of what that kind produced on that model lately.

Holding the kind's whole ``max_output_tokens`` made a hold many times the real charge (a review held about 22x
what it was charged), so near a budget's cap the holds of calls in flight crowded out work the budget had room
for. A hold now covers the estimated prompt (:func:`routing.estimate.estimate_tokens`) plus ``percentile`` of
the output tokens of the last ``history`` answers of that kind on that provider's model (the kind's cap while
there are fewer than ``min_history`` of them), and that many output tokens are passed as the call's limit
(``max_tokens``, ``max_output_tokens``, ``num_predict``): the provider stops there, so the charge never
exceeds the hold. An answer cut by the limit is paid for and asked once more with the whole cap held
(:mod:`tasks.attempt`). The agent CLIs cannot limit their output: their holds stay at the cap.

Why p99 by default rather than p95: a cut answer is paid for and then asked again, so each cut costs about a
whole extra call: one answer in twenty at p95, one in a hundred at p99, for a hold only a little larger (the
tail above p95 is thin). Near a cap that extra spend crowds out more work than the slightly larger holds of the
calls in flight: in the race of ``tests/test_hold_sizing.py`` p95 cut 6 answers of 200 and admitted 93.5-94.5%
of the work that fits (holds 1.7x the charge), p99 cut 1 and admitted 96-98.5% (1.8x).

The history is read once per (kind, provider, model) and then kept for ``ttl_s`` seconds in this process, so
sizing adds no query to an attempt.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import SQLAlchemyError

from store.db import session_scope
from store.migrate import masked
from store.outputs import recent_outputs
from switchyard.settings import Settings

log = logging.getLogger(__name__)
MIN_HELD_OUTPUT = 16  # the smallest output limit a kind may set (switchyard.fleet_models.KindConfig)


def percentile(values: Sequence[int], pct: float) -> int:
    """The nearest-rank ``pct`` percentile of ``values``: the smallest value at least ``pct``% of them are at or
    below (the largest value for 100). Raises ValueError for no values or a ``pct`` outside (0, 100]."""
    if not values:
        raise ValueError("a percentile of no values; give at least one")
    if not 0 < pct <= 100:
        raise ValueError(f"a percentile is above 0 and at most 100, not {pct}")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def held_output(outputs: Sequence[int], cap: int, *, pct: float, min_history: int) -> int:
    """The output tokens to hold and pass as the call's limit (pure): ``pct`` of ``outputs``, within
    [16, ``cap``]; ``cap`` itself while there are fewer than ``min_history`` outputs."""
    if len(outputs) < min_history:
        return cap
    return min(cap, max(MIN_HELD_OUTPUT, percentile(outputs, pct)))


@dataclass
class HoldSizes:
    """Output sizes from one database's attempts, each history read at most every ``ttl_s`` seconds."""

    database_url: str
    history: int = 200
    min_history: int = 20
    pct: float = 99.0
    ttl_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _seen: dict[tuple[str, str, str], tuple[float, tuple[int, ...]]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, database_url: str, settings: Settings) -> HoldSizes:
        return cls(
            database_url,
            history=settings.hold_history,
            min_history=settings.hold_min_history,
            pct=settings.hold_output_percentile,
            ttl_s=settings.hold_history_ttl_s,
        )

    def output_tokens(self, kind: str, provider: str, model: str, cap: int) -> int:
        """The output tokens to hold for a call of ``kind`` on ``provider``'s ``model`` (its limit)."""
        return held_output(self.outputs(kind, provider, model), cap, pct=self.pct, min_history=self.min_history)

    def outputs(self, kind: str, provider: str, model: str) -> tuple[int, ...]:
        """The recent output tokens, from this process's copy while it is fresh. A database that cannot be read
        gives none (the hold is the whole cap: never less than the call may cost); the ledger's hold, in its own
        transaction, then says whether the database is there."""
        key = (kind, provider, model)
        now = self.clock()
        with self._lock:
            cached = self._seen.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            with session_scope(self.database_url) as session:
                found = tuple(recent_outputs(session, kind=kind, provider=provider, model=model, limit=self.history))
        except SQLAlchemyError as exc:  # the class only: a driver's message may quote the server
            log.warning(
                "output history of %s on %s/%s unreadable (%s, %s): holding the whole cap",
                kind,
                provider,
                model,
                masked(self.database_url),
                type(exc).__name__,
            )
            found = ()
        with self._lock:
            if len(self._seen) > 1024:
                self._seen.clear()
            self._seen[key] = (now + self.ttl_s, found)
        return found

    def forget(self) -> None:
        """Read every history again on the next hold."""
        with self._lock:
            self._seen.clear()
