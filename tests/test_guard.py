"""One provider call under retries, the shared breaker and limits: the real Claude client, the simulator, Redis."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from conftest import free_port, patient

from providers.base import ProviderRequest, ProviderResponse
from providers.claude import ClaudeProvider
from routing.breaker import Breakers
from routing.guard import guarded_call, verdict
from routing.permits import Permit, ProviderLimits, Transition
from simulator.server import BackgroundSimulator
from switchyard.errors import (
    BadAnswer,
    ModelNotFound,
    Overloaded,
    ProviderDown,
    ProviderUnavailable,
    RateLimited,
    RequestRejected,
    StateUnavailable,
    TransientError,
)
from switchyard.fleet_models import BreakerPolicy, RetryPolicy

SECRET = "sk-test-GUARD-0123456789abcdef"
RETRY = RetryPolicy(attempts=3, initial_s=0.5, multiplier=2.0, max_s=5.0, jitter_s=0.0, max_retry_after_s=30.0)
REQUEST = ProviderRequest(model="claude-haiku-4-5", system="Task kind: pr_review", prompt="diff --git a/x b/x")


@pytest.fixture
def claude(server: BackgroundSimulator) -> Iterator[ClaudeProvider]:
    provider = ClaudeProvider(base_url=server.url, api_key=SECRET, timeout=5.0)
    yield provider
    provider.close()


@pytest.fixture
def seen() -> list[Transition]:
    return []


@pytest.fixture
def breakers(redis_url: str, seen: list[Transition]) -> Iterator[Breakers]:
    client = redis.Redis.from_url(redis_url)
    policy = BreakerPolicy(failure_threshold=3, open_seconds=0.5)
    yield Breakers(client, policy, {"claude": ProviderLimits(max_in_flight=4)}, on_transition=seen.append)
    client.close()


def fault(sim: httpx.Client, **change: Any) -> None:
    sim.post("/_sim/providers/claude", json=change).raise_for_status()


def calls(sim: httpx.Client) -> int:
    count: int = sim.get("/_sim/state").json()["providers"]["claude"]["calls"]
    return count


def run(
    breakers: Breakers, claude: ClaudeProvider, sleeps: list[float], policy: RetryPolicy = RETRY
) -> ProviderResponse:
    call: Callable[[], ProviderResponse] = lambda: claude.call(REQUEST)  # noqa: E731 - the one call under guard
    return guarded_call(breakers, "claude", call, policy, sleep=sleeps.append)


def test_retries_then_success(breakers: Breakers, claude: ClaudeProvider, sim: httpx.Client) -> None:
    fault(sim, fail_next=2, error_status=500)
    sleeps: list[float] = []
    answer = run(breakers, claude, sleeps)
    assert answer.text and answer.provider == "claude"
    assert calls(sim) == 3
    assert sleeps == [0.5, 1.0]
    status = breakers.status(["claude"])["claude"]
    assert (status.state, status.failures, status.in_flight) == ("closed", 0, 0)  # the success reset the count


def test_a_breaker_that_opens_mid_retry_stops_the_loop(
    breakers: Breakers, claude: ClaudeProvider, sim: httpx.Client, seen: list[Transition]
) -> None:
    fault(sim, error_rate=1.0, error_status=529)
    sleeps: list[float] = []
    with pytest.raises(Overloaded):
        run(breakers, claude, sleeps, RETRY.model_copy(update={"attempts": 2}))
    assert calls(sim) == 2
    with pytest.raises(ProviderUnavailable) as caught:
        run(breakers, claude, sleeps, RETRY.model_copy(update={"attempts": 10}))
    assert calls(sim) == 3  # the third failure opened it; the fourth try was refused before any call
    assert caught.value.reason == "open"
    assert caught.value.retry_in_s is not None and 0 < caught.value.retry_in_s <= 0.5
    assert "stopped after 1 try, the last failed with Overloaded" in str(caught.value)
    assert [(t.from_state, t.to_state) for t in seen] == [("closed", "open")]
    assert breakers.status(["claude"])["claude"].in_flight == 0


def test_a_half_open_probe_gets_exactly_one_try(
    breakers: Breakers, claude: ClaudeProvider, sim: httpx.Client, seen: list[Transition]
) -> None:
    fault(sim, error_rate=1.0, error_status=503)
    with pytest.raises(TransientError):
        run(breakers, claude, [])  # three tries, three failures: open
    assert calls(sim) == 3
    breakers_wait_half_open(breakers)
    with pytest.raises(ProviderUnavailable, match="breaker open"):
        run(breakers, claude, [])
    assert calls(sim) == 4
    assert [(t.from_state, t.to_state) for t in seen][-1] == ("half_open", "open")
    breakers_wait_half_open(breakers)
    sim.post("/_sim/providers/claude/heal").raise_for_status()
    assert run(breakers, claude, []).text
    assert breakers.status(["claude"])["claude"].state == "closed"


def breakers_wait_half_open(breakers: Breakers, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + patient(timeout_s)
    while breakers.status(["claude"])["claude"].state != "half_open":
        assert time.monotonic() < deadline, "the breaker did not turn half-open"
        time.sleep(0.05)


def test_429_honours_retry_after_and_counts_once_when_it_persists(
    breakers: Breakers, claude: ClaudeProvider, sim: httpx.Client
) -> None:
    fault(sim, error_rate=1.0, error_status=429, retry_after_s=2.5)
    sleeps: list[float] = []
    with pytest.raises(RateLimited) as caught:
        run(breakers, claude, sleeps)
    assert caught.value.retry_after == 2.5
    assert sleeps == [2.5, 2.5]  # the provider's hint, not the policy's 0.5 s backoff
    assert calls(sim) == 3
    assert breakers.status(["claude"])["claude"].failures == 1


def test_a_passing_429_does_not_count(breakers: Breakers, claude: ClaudeProvider, sim: httpx.Client) -> None:
    fault(sim, fail_next=1, error_status=500)
    with pytest.raises(TransientError):
        run(breakers, claude, [], RETRY.model_copy(update={"attempts": 1}))
    assert breakers.status(["claude"])["claude"].failures == 1
    fault(sim, fail_next=2, error_status=429, retry_after_s=1.5)
    sleeps: list[float] = []
    assert run(breakers, claude, sleeps).text
    assert sleeps == [1.5, 1.5]
    assert breakers.status(["claude"])["claude"].failures == 0


def test_401_disables_the_provider(
    breakers: Breakers, claude: ClaudeProvider, sim: httpx.Client, seen: list[Transition]
) -> None:
    fault(sim, error_rate=1.0, error_status=401)
    with pytest.raises(ProviderDown):
        run(breakers, claude, [])
    assert calls(sim) == 1  # not retried
    assert [(t.from_state, t.to_state) for t in seen] == [("closed", "disabled")]
    assert "HTTP 401" in seen[0].cause
    assert SECRET not in seen[0].cause  # the simulator echoes the key; the client scrubbed it
    sim.post("/_sim/providers/claude/heal").raise_for_status()
    with pytest.raises(ProviderUnavailable) as caught:
        run(breakers, claude, [])
    assert (caught.value.reason, caught.value.retry_in_s) == ("disabled", None)
    assert calls(sim) == 1
    breakers.enable("claude")
    assert run(breakers, claude, []).text


def test_413_is_the_tasks_problem(breakers: Breakers, claude: ClaudeProvider, sim: httpx.Client) -> None:
    fault(sim, fail_next=1, error_status=500)
    with pytest.raises(TransientError):
        run(breakers, claude, [], RETRY.model_copy(update={"attempts": 1}))
    fault(sim, error_rate=1.0, error_status=413)
    for _ in range(5):
        with pytest.raises(RequestRejected):
            run(breakers, claude, [])
    assert calls(sim) == 6  # never retried
    status = breakers.status(["claude"])["claude"]
    assert (status.state, status.failures, status.in_flight) == ("closed", 1, 0)  # neither counted nor reset


def test_a_timeout_counts(breakers: Breakers, server: BackgroundSimulator, sim: httpx.Client) -> None:
    fault(sim, error_rate=1.0, error_status="timeout", hang_ms=3000)
    slow = ClaudeProvider(base_url=server.url, api_key=SECRET, timeout=0.3)
    try:
        with pytest.raises(TransientError, match=r"timed out|timeout"):
            run(breakers, slow, [], RETRY.model_copy(update={"attempts": 2}))
    finally:
        slow.close()
    assert breakers.status(["claude"])["claude"].failures == 2


def test_the_in_flight_slot_is_freed_when_the_call_raises_something_else(breakers: Breakers) -> None:
    def broken() -> str:
        raise KeyError("a bug in the caller")

    with pytest.raises(KeyError):
        guarded_call(breakers, "claude", broken, RETRY, sleep=lambda _: None)
    status = breakers.status(["claude"])["claude"]
    assert (status.in_flight, status.failures, status.calls_last_minute) == (0, 0, 1)


def test_busy_is_refused_without_calling(breakers: Breakers, sim: httpx.Client) -> None:
    held = [breakers.acquire("claude") for _ in range(4)]
    assert all(isinstance(p, Permit) for p in held)
    with pytest.raises(ProviderUnavailable) as caught:
        guarded_call(breakers, "claude", lambda: "never", RETRY, sleep=lambda _: None)
    assert caught.value.reason == "busy"


def test_the_shared_state_away_fails_closed(server: BackgroundSimulator, sim: httpx.Client) -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=1)
    breakers = Breakers(client, BreakerPolicy(), {})
    with pytest.raises(StateUnavailable):
        guarded_call(breakers, "claude", lambda: "never", RETRY, sleep=lambda _: None)
    assert calls(sim) == 0


@pytest.mark.parametrize(
    ("error", "last_try", "probe", "expected"),
    [
        (TransientError("500", status=500), False, False, "failure"),
        (Overloaded("529", status=529), False, False, "failure"),
        (TransientError("timed out"), False, False, "failure"),
        (RateLimited("429"), False, False, "none"),
        (RateLimited("429"), True, False, "failure"),
        (RateLimited("429"), False, True, "failure"),
        (ProviderDown("401", status=401), False, False, "disable"),
        (ProviderDown("403", status=403), False, False, "disable"),
        (ProviderDown("claude CLI not installed"), False, False, "none"),
        (RequestRejected("413", status=413), True, False, "none"),
        (ModelNotFound("404", status=404), True, True, "none"),
        (BadAnswer("empty diff"), True, True, "none"),
    ],
)
def test_the_error_class_decides(error: Exception, last_try: bool, probe: bool, expected: str) -> None:
    assert isinstance(error, TransientError | ProviderDown | RequestRejected | BadAnswer)
    assert verdict(error, last_try=last_try, probe=probe) == expected
