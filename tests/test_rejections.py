"""Provider errors a next rung can serve, through the official SDKs against the simulator over HTTP and the
shared breaker in Redis: 400, 404, 413 and 422 in each wire format become RequestRejected (404: ModelNotFound)
with the provider's own text, are not retried and say nothing about the provider's health; a call that hangs
past its timeout is a TransientError that counts as a breaker failure on every SDK."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from providers.base import Provider, ProviderRequest
from providers.claude import ClaudeProvider
from providers.codex import CodexProvider
from providers.ollama import OllamaProvider
from routing.breaker import Breakers
from routing.guard import guarded_call
from routing.permits import ProviderLimits
from simulator.server import BackgroundSimulator
from switchyard.errors import BadAnswer, ModelNotFound, RequestRejected, TransientError
from switchyard.fleet_models import BreakerPolicy, RetryPolicy

SECRET = "sk-test-REJECT-0123456789abcdef"
RETRY = RetryPolicy(attempts=3, initial_s=0.01, multiplier=1.0, max_s=0.01, jitter_s=0.0)
MODELS = {"claude": "claude-haiku-4-5", "codex": "gpt-5.3-codex", "ollama": "qwen2.5-coder:7b"}
# (status, provider) -> a piece of the provider's own text that the error must carry
TEXTS = {
    (400, "claude"): "prompt is too long",
    (400, "codex"): "exceeds the context window",
    (400, "ollama"): "exceeds the context length",
    (404, "claude"): "model: claude-haiku-4-5",
    (404, "codex"): "The model `gpt-5.3-codex` does not exist",
    (404, "ollama"): 'model "qwen2.5-coder:7b" not found, try pulling it first',
    (413, "claude"): "Request exceeds the maximum allowed number of bytes",
    (413, "codex"): "Request too large",
    (413, "ollama"): "request body too large",
    (422, "claude"): "Input should be a valid list",
    (422, "codex"): "Invalid value for 'input'",
    (422, "ollama"): "invalid options",
}


def build(name: str, url: str, timeout: float, *, stream: bool = False) -> Provider:
    if name == "claude":
        return ClaudeProvider(base_url=url, api_key=SECRET, timeout=timeout, stream=stream)
    if name == "codex":
        return CodexProvider(base_url=f"{url}/v1", api_key=SECRET, timeout=timeout, stream=stream)
    return OllamaProvider(host=url, timeout=timeout, api_key=SECRET)


@pytest.fixture
def breakers(redis_url: str) -> Iterator[Breakers]:
    client = redis.Redis.from_url(redis_url)
    limits = {name: ProviderLimits(max_in_flight=4) for name in MODELS}
    yield Breakers(client, BreakerPolicy(failure_threshold=5, open_seconds=30), limits)
    client.close()


def call(breakers: Breakers, provider: Provider, name: str) -> Callable[[], Any]:
    request = ProviderRequest(model=MODELS[name], system="Task kind: pr_review", prompt="diff --git a/x b/x")
    return lambda: guarded_call(breakers, name, lambda: provider.call(request), RETRY, sleep=lambda _: None)


def calls(sim: httpx.Client, name: str) -> int:
    count: int = sim.get("/_sim/state").json()["providers"][name]["calls"]
    return count


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_a_rejection_is_not_retried_is_not_the_providers_fault_and_carries_its_text(
    breakers: Breakers, server: BackgroundSimulator, sim: httpx.Client, name: str, status: int
) -> None:
    sim.post(f"/_sim/providers/{name}", json={"error_rate": 1.0, "error_status": status}).raise_for_status()
    provider = build(name, server.url, 5.0)
    try:
        with pytest.raises(RequestRejected) as caught:
            call(breakers, provider, name)()
    finally:
        provider.close()
    assert isinstance(caught.value, ModelNotFound) == (status == 404)
    assert caught.value.status == status and caught.value.provider == name
    assert TEXTS[status, name] in str(caught.value), str(caught.value)
    assert calls(sim, name) == 1  # never retried
    state = breakers.status([name])[name]
    assert (state.state, state.failures, state.in_flight) == ("closed", 0, 0)  # no verdict, the slot is free


@pytest.mark.parametrize("name", list(MODELS))
def test_only_the_missing_model_answers_404(
    breakers: Breakers, server: BackgroundSimulator, sim: httpx.Client, name: str
) -> None:
    sim.post(f"/_sim/providers/{name}", json={"missing_models": [MODELS[name]]}).raise_for_status()
    provider = build(name, server.url, 5.0)
    other = ProviderRequest(model="another-model", system="Task kind: pr_review", prompt="diff --git a/x b/x")
    try:
        with pytest.raises(ModelNotFound, match="HTTP 404"):
            call(breakers, provider, name)()
        assert provider.call(other).text  # the provider itself is fine
    finally:
        provider.close()
    healed = sim.post(f"/_sim/providers/{name}/heal").json()
    assert healed["missing_models"] == [] and healed["errors"] == 1


@pytest.mark.parametrize(("name", "stream"), [("claude", False), ("claude", True), ("codex", True), ("ollama", False)])
def test_a_call_that_hangs_past_its_timeout_counts_as_a_breaker_failure(
    breakers: Breakers, server: BackgroundSimulator, sim: httpx.Client, name: str, stream: bool
) -> None:
    sim.post(f"/_sim/providers/{name}", json={"error_rate": 1.0, "error_status": "timeout", "hang_ms": 5000})
    provider = build(name, server.url, 0.3, stream=stream)
    try:
        with pytest.raises(TransientError, match=r"timed out after 0\.3s"):
            call(breakers, provider, name)()
    finally:
        provider.close()
    assert calls(sim, name) == 3  # retried like any transient failure
    state = breakers.status([name])[name]
    assert (state.failures, state.in_flight) == (3, 0)
    assert state.last_failure is not None and "timed out" in state.last_failure


@pytest.mark.parametrize(("name", "stream"), [("claude", False), ("codex", False)])
def test_a_200_whose_body_is_not_json_is_an_unusable_answer(
    breakers: Breakers, server: BackgroundSimulator, sim: httpx.Client, name: str, stream: bool
) -> None:
    """The SDKs let the JSON decoder's error out; ours is a BadAnswer, so the ladder moves to the next rung."""
    sim.post(f"/_sim/providers/{name}", json={"error_rate": 1.0, "error_status": "malformed"}).raise_for_status()
    provider = build(name, server.url, 5.0, stream=stream)
    try:
        with pytest.raises(BadAnswer, match="not JSON"):
            call(breakers, provider, name)()
    finally:
        provider.close()
