"""The one retry loop inside an attempt, built from the fleet file's :class:`RetryPolicy` with tenacity.

Only errors whose ``retryable`` flag is set are retried; a rate limit waits for the provider's
``retry-after`` hint (capped by ``max_retry_after_s``), everything else backs off exponentially with jitter.
The SDKs' own retries are off, so this is the only place a provider call is repeated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from switchyard.errors import ProviderError, RateLimited
from switchyard.fleet import RetryPolicy

T = TypeVar("T")


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


class WaitForProvider:
    """Tenacity wait strategy: ``retry-after`` when the provider gave one, exponential backoff otherwise."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        # tenacity's ``multiplier`` is the first wait (its ``initial`` is deprecated); ``exp_base`` grows it
        self.backoff = wait_exponential_jitter(
            multiplier=policy.initial_s, max=policy.max_s, exp_base=policy.multiplier, jitter=policy.jitter_s
        )

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return min(exc.retry_after, self.policy.max_retry_after_s)
        return float(self.backoff(state))


def retrying(policy: RetryPolicy, *, sleep: Callable[[float], None] = time.sleep) -> Retrying:
    """A tenacity ``Retrying`` for one attempt; ``sleep`` is a parameter so tests never sleep."""
    return Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=WaitForProvider(policy),
        retry=retry_if_exception(is_retryable),
        sleep=sleep,
        reraise=True,
    )


def call_with_retry(fn: Callable[[], T], policy: RetryPolicy, *, sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn`` under ``policy``; the last error is re-raised as itself when retries run out."""
    return retrying(policy, sleep=sleep)(fn)
