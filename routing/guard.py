"""One provider call under the attempt's retries, the shared breaker and the provider's limits.

:func:`guarded_call` is the one tenacity loop of an attempt on one provider (:mod:`routing.retry`). Every try
first takes a permit from :class:`routing.breaker.Breakers`, so a breaker that another process opened in the
middle of our retries stops them at once, and a half-open probe gets exactly one try. What a failed try tells
the breaker depends on the error's class (:func:`verdict`):

    TransientError (connection errors, 5xx, 529, and a call that hangs past the provider timeout: every
      client turns its SDK's timeout into one, :func:`providers.http_errors.transport_error`)   a failure
    RateLimited (429)            waits for ``retry-after``; counts once, when it is still 429 on the last try
    ProviderDown with 401/402/403                          disables the provider (an alert) until enabled
    RequestRejected (400/413/422), ModelNotFound (404)     this request's problem, not the provider's health:
      BadAnswer, anything else                             no verdict, the slot is freed, no retry; the
                                                           attempt falls back (a 404 marks the model unusable)

The first try can use a permit asked for earlier (:class:`~routing.breaker.PermitRequest`, which the router
sends before its hold). A success's verdict is sent without waiting (:meth:`Breakers.send_success`); the caller
reads it with :meth:`Breakers.flush` once its own bookkeeping is done, or the next breaker call does.

When it gives up it raises (the provider's last error, or :class:`~switchyard.errors.ProviderUnavailable`
when the breaker or a limit refused a try) and never starts over: the caller moves to the next rung.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

from tenacity import Retrying

from providers.http_errors import DOWN_STATUSES
from routing.breaker import Breakers, PermitRequest
from routing.permits import Denial, Permit
from routing.retry import retrying
from switchyard.errors import (
    ProviderDown,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    StateUnavailable,
    TransientError,
)
from switchyard.fleet_models import RetryPolicy

T = TypeVar("T")
Verdict = Literal["failure", "disable", "none"]
CAUSE_CHARS = 300
log = logging.getLogger(__name__)


def verdict(exc: ProviderError, *, last_try: bool, probe: bool) -> Verdict:
    """What a failed try means for the provider's breaker (pure: the error class decides)."""
    if isinstance(exc, ProviderDown):
        return "disable" if exc.status in DOWN_STATUSES else "none"
    if isinstance(exc, RateLimited):
        return "failure" if last_try or probe else "none"  # a probe gets one try: a 429 fails it
    if isinstance(exc, TransientError):
        return "failure"
    return "none"


def cause_of(exc: BaseException) -> str:
    """A short cause for the breaker's record; provider messages are already scrubbed of secrets."""
    return f"{type(exc).__name__}: {exc}"[:CAUSE_CHARS]


def guarded_call(
    breakers: Breakers,
    provider: str,
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    permit: PermitRequest | None = None,
) -> T:
    """``fn()`` (one call of ``provider``) under ``policy``'s retries, each try under a breaker permit.

    Raises the provider's last error when the retries run out or the error is not retryable,
    :class:`ProviderUnavailable` when the breaker or a limit refuses a try (at once, no retry), and
    :class:`~switchyard.errors.StateUnavailable` when the shared state cannot be reached (fail closed).
    """
    if permit is not None and permit.provider != provider:
        raise ValueError(f"a permit for {permit.provider} cannot guard a call of {provider}")
    tries = _Tries(breakers, provider, fn, policy.attempts, permit)
    for attempt in _retrying(policy, sleep):
        with attempt:
            return tries.one(attempt.retry_state.attempt_number)
    raise AssertionError("tenacity re-raises the last error when it stops")  # pragma: no cover


@functools.lru_cache(maxsize=32)
def _retrying(policy: RetryPolicy, sleep: Callable[[float], None]) -> Retrying:
    """One tenacity ``Retrying`` per policy and sleep, shared by every call: tenacity keeps the state of a run
    (statistics, the current try) per thread, and building one costs as much as a run of it."""
    return retrying(policy, sleep=sleep)


class _Tries(Generic[T]):
    """The tries of one :func:`guarded_call`; remembers the last provider error for a refusal's message."""

    def __init__(
        self, breakers: Breakers, provider: str, fn: Callable[[], T], attempts: int, first: PermitRequest | None
    ) -> None:
        self.breakers, self.provider, self.fn, self.attempts = breakers, provider, fn, attempts
        self.first = first
        self.last_error: ProviderError | None = None

    def one(self, number: int) -> T:
        first, self.first = self.first, None
        permit = first.take() if first is not None else self.breakers.acquire(self.provider)
        if isinstance(permit, Denial):
            raise self._refused(permit, number)
        try:
            result: T = self.fn()
        except ProviderError as exc:
            self.last_error = exc
            self._settle(permit, exc, last_try=number >= self.attempts)
            raise
        except BaseException:
            _quietly(self.breakers.release, permit)
            raise
        _quietly(self.breakers.send_success, permit)
        return result

    def _settle(self, permit: Permit, exc: ProviderError, *, last_try: bool) -> None:
        decided = verdict(exc, last_try=last_try, probe=permit.probe)
        if decided == "failure":
            _quietly(self.breakers.failure, permit, cause_of(exc))
            return
        _quietly(self.breakers.release, permit)
        if decided == "disable":
            _quietly(self.breakers.disable, self.provider, cause_of(exc))

    def _refused(self, denial: Denial, number: int) -> ProviderUnavailable:
        message = denial.message
        if self.last_error is not None:
            tries = f"{number - 1} {'try' if number == 2 else 'tries'}"
            message += f"; stopped after {tries}, the last failed with {cause_of(self.last_error)}"
        return ProviderUnavailable(message, provider=self.provider, reason=denial.reason, retry_in_s=denial.retry_in_s)


def _quietly(action: Callable[..., None], *args: object) -> None:
    """Record a verdict; when the shared state is away the call's own outcome still stands (the lease expires)."""
    try:
        action(*args)
    except StateUnavailable as exc:
        log.warning("could not record a breaker verdict: %s", exc)
