"""The retry policy: only retryable errors, retry-after honoured and capped, exponential backoff, no real sleeps."""

from __future__ import annotations

import pytest

from routing.retry import call_with_retry
from switchyard.errors import ProviderDown, RateLimited, RequestRejected, TransientError
from switchyard.fleet import RetryPolicy

POLICY = RetryPolicy(attempts=3, initial_s=1.0, multiplier=2.0, max_s=30.0, jitter_s=0.0, max_retry_after_s=10.0)


class Flaky:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_transient_errors_are_retried_with_backoff() -> None:
    sleeps: list[float] = []
    fn = Flaky(TransientError("500"), TransientError("500"))
    assert call_with_retry(fn, POLICY, sleep=sleeps.append) == "ok"
    assert fn.calls == 3
    assert sleeps == [1.0, 2.0]


def test_retry_after_is_honoured_and_capped() -> None:
    sleeps: list[float] = []
    fn = Flaky(RateLimited("429", retry_after=3.5), RateLimited("429", retry_after=99.0))
    call_with_retry(fn, POLICY, sleep=sleeps.append)
    assert sleeps == [3.5, 10.0]


def test_gives_up_after_the_policy_attempts_with_the_last_error() -> None:
    fn = Flaky(*(TransientError(f"boom {i}") for i in range(5)))
    with pytest.raises(TransientError, match="boom 2"):
        call_with_retry(fn, POLICY, sleep=lambda _: None)
    assert fn.calls == 3


@pytest.mark.parametrize("error", [ProviderDown("401"), RequestRejected("413")])
def test_non_retryable_errors_are_not_retried(error: Exception) -> None:
    fn = Flaky(error)
    with pytest.raises(type(error)):
        call_with_retry(fn, POLICY, sleep=lambda _: None)
    assert fn.calls == 1
