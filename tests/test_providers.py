"""The provider clients through their real SDKs against the simulator over HTTP: answers, usage, errors."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port

from providers.base import Provider, ProviderRequest, ProviderResponse
from providers.claude import ClaudeProvider
from providers.codex import CodexProvider
from providers.ollama import OllamaProvider
from providers.registry import available, build_provider
from simulator.server import BackgroundSimulator
from switchyard.errors import (
    ConfigError,
    ModelNotFound,
    Overloaded,
    ProviderDown,
    ProviderError,
    RateLimited,
    RequestRejected,
    TransientError,
)
from switchyard.fleet import Fleet, load_fleet
from switchyard.settings import DEFAULT_FLEET_FILE, Settings

SECRET = "sk-test-SECRET-0123456789abcdef"
MODELS = {"claude": "claude-haiku-4-5", "codex": "gpt-5.3-codex", "ollama": "qwen2.5-coder:7b"}
DIFF = "diff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n@@ -3,4 +3,6 @@ def main():\n+    run()\n"
LONG_SYSTEM = "Task kind: pr_review\n" + "Review rules. " * 700  # about 2450 tokens: long enough to be cached
Factory = Callable[..., Provider]


@pytest.fixture
def make(server: BackgroundSimulator) -> Iterator[Factory]:
    """``make(name, timeout=5.0, stream=False, url=None)``: a provider on the simulator, closed afterwards."""
    made: list[ClaudeProvider | CodexProvider | OllamaProvider] = []

    def factory(name: str, *, timeout: float = 5.0, stream: bool = False, url: str | None = None) -> Provider:
        base = url or server.url
        provider: ClaudeProvider | CodexProvider | OllamaProvider
        if name == "claude":
            provider = ClaudeProvider(base_url=base, api_key=SECRET, timeout=timeout, stream=stream)
        elif name == "codex":
            provider = CodexProvider(base_url=f"{base}/v1", api_key=SECRET, timeout=timeout, stream=stream)
        else:
            provider = OllamaProvider(host=base, timeout=timeout, api_key=SECRET)
        made.append(provider)
        return provider

    yield factory
    for provider in made:
        provider.close()


def ask(provider: Provider, kind: str, prompt: str, *, system: str | None = None) -> ProviderResponse:
    request = ProviderRequest(model=MODELS[provider.name], system=system or f"Task kind: {kind}", prompt=prompt)
    return provider.call(request)


def state(sim: httpx.Client, provider: str) -> dict[str, int]:
    counters: dict[str, int] = sim.get("/_sim/state").json()["providers"][provider]
    return counters


def git_repo(path: Path) -> Path:
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "start"]):
        env = {
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
        }
        subprocess.run(["git", *args], cwd=path, check=True, env={**env, "PATH": "/usr/bin:/bin", "HOME": str(path)})
    return path


# --- answers by kind, through every provider ---------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_review_answer_is_json_pointing_at_the_diff(make: Factory, name: str) -> None:
    response = ask(make(name), "pr_review", f"Please review.\n\n{DIFF}")
    review = json.loads(response.text)
    assert review["verdict"] == "approve" and isinstance(review["summary"], str)
    assert [(c["file"], c["line"]) for c in review["comments"]] == [("app.py", 3)]
    assert response.provider == name and response.transport == "api" and response.latency_ms > 0


@pytest.mark.parametrize(("name", "kind"), [("codex", "pr_impl"), ("ollama", "dev_task"), ("claude", "pr_impl")])
def test_change_answer_is_a_diff_that_applies(make: Factory, tmp_path: Path, name: str, kind: str) -> None:
    prompt = "Task id: 9f8e7d6c5b4a3210\nTitle: Add the cost report\nDescribe the change."
    response = ask(make(name), kind, prompt)
    diff = re.search(r"```diff\n(.*?)```", response.text, re.DOTALL)
    assert diff is not None
    repo = git_repo(tmp_path)
    (repo / "change.diff").write_text(diff.group(1))
    subprocess.run(["git", "apply", "--check", "change.diff"], cwd=repo, check=True)
    subprocess.run(["git", "apply", "change.diff"], cwd=repo, check=True)
    module = (repo / "add_the_cost_report.py").read_text()  # a module and a function named after the title
    assert "def add_the_cost_report() -> str:" in module and "Add the cost report" in module


@pytest.mark.parametrize("name", list(MODELS))
def test_plan_and_integ_answers(make: Factory, name: str) -> None:
    plan = json.loads(ask(make(name), "plan", "Goal: split the billing module").text)
    assert [(s["key"], s["depends_on"]) for s in plan["subtasks"]] == [("s1", []), ("s2", ["s1"])]
    integ = json.loads(ask(make(name), "pr_integ", "Branch: env/dev2-qa").text)
    assert integ["decision"] == "merge" and "env/dev2-qa" in integ["commit_message"]


# --- usage normalization, end to end -----------------------------------------------------------------------


def test_claude_usage_excludes_cache_reads_and_splits_writes(make: Factory, server: BackgroundSimulator) -> None:
    response = ask(make("claude"), "pr_review", DIFF, system=LONG_SYSTEM)
    raw = httpx.post(
        f"{server.url}/v1/messages",
        json={
            "model": MODELS["claude"],
            "max_tokens": 2048,
            "system": LONG_SYSTEM,
            "messages": [{"role": "user", "content": DIFF}],
        },
    ).json()["usage"]
    usage = response.usage
    assert usage.cached_input_tokens == raw["cache_read_input_tokens"] > 0
    assert usage.cache_write_tokens == raw["cache_creation"]["ephemeral_5m_input_tokens"] > 0
    assert usage.input_tokens == raw["input_tokens"] and usage.cache_write_1h_tokens == 0
    assert usage.output_tokens == raw["output_tokens"] and usage.compute_seconds == 0
    assert response.stop_reason == "end_turn" and response.response_id


def test_codex_usage_subtracts_cached_from_input_and_keeps_reasoning_inside_output(
    make: Factory, server: BackgroundSimulator
) -> None:
    response = ask(make("codex"), "pr_review", DIFF, system=LONG_SYSTEM)
    raw = httpx.post(
        f"{server.url}/v1/responses",
        json={
            "model": MODELS["codex"],
            "instructions": LONG_SYSTEM,
            "input": DIFF,
            "max_output_tokens": 2048,
        },
    ).json()["usage"]
    cached = raw["input_tokens_details"]["cached_tokens"]
    assert cached > 0 and response.usage.cached_input_tokens == cached
    assert response.usage.input_tokens == raw["input_tokens"] - cached
    assert response.usage.reasoning_tokens == raw["output_tokens_details"]["reasoning_tokens"] > 0
    assert response.usage.output_tokens == raw["output_tokens"]
    assert response.stop_reason == "completed"


def test_ollama_usage_counts_and_compute_seconds(make: Factory, server: BackgroundSimulator) -> None:
    response = ask(make("ollama"), "pr_integ", "Branch: b")
    raw = httpx.post(
        f"{server.url}/api/chat",
        json={
            "model": MODELS["ollama"],
            "stream": False,
            "options": {"num_predict": 2048},
            "messages": [
                {"role": "system", "content": "Task kind: pr_integ"},
                {"role": "user", "content": "Branch: b"},
            ],
        },
    ).json()
    assert response.usage.input_tokens == raw["prompt_eval_count"] > 0
    assert response.usage.output_tokens == raw["eval_count"] > 0
    assert response.usage.compute_seconds == pytest.approx(raw["total_duration"] / 1e9)
    assert response.stop_reason == "stop"


@pytest.mark.parametrize("name", ["claude", "codex"])
def test_streaming_gives_the_same_answer_and_usage(make: Factory, name: str) -> None:
    plain = ask(make(name), "pr_review", DIFF, system=LONG_SYSTEM)
    streamed = ask(make(name, stream=True), "pr_review", DIFF, system=LONG_SYSTEM)
    assert streamed.text == plain.text
    assert streamed.usage == plain.usage
    assert streamed.stop_reason == plain.stop_reason


@pytest.mark.parametrize(
    ("name", "reason"), [("claude", "max_tokens"), ("codex", "max_output_tokens"), ("ollama", "length")]
)
def test_truncated_answers_say_why(make: Factory, name: str, reason: str) -> None:
    request = ProviderRequest(model=MODELS[name], system="Task kind: plan", prompt="Goal: g", max_output_tokens=16)
    response = make(name).call(request)
    assert response.stop_reason == reason
    assert response.cut_short and response.usage.output_tokens == 16  # the limit bounds reasoning tokens too
    assert len(response.text) == 4 * (16 - response.usage.reasoning_tokens)


# --- faults map to the error tree, with no SDK retry -------------------------------------------------------

FAULTS = [
    (429, RateLimited),
    (529, Overloaded),
    (500, TransientError),
    (503, TransientError),
    (401, ProviderDown),
    (403, ProviderDown),
    (400, RequestRejected),
    (404, ModelNotFound),
    (413, RequestRejected),
    (422, RequestRejected),
]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(("status", "error"), FAULTS)
def test_http_faults_map_to_the_error_tree_after_exactly_one_call(
    make: Factory, sim: httpx.Client, name: str, status: int, error: type[ProviderError]
) -> None:
    sim.post(f"/_sim/providers/{name}", json={"fail_next": 1, "error_status": status, "retry_after_s": 2.5})
    with pytest.raises(ProviderError) as caught:
        ask(make(name), "plan", "Goal: g")
    assert type(caught.value) is error
    assert (caught.value.provider, caught.value.status) == (name, status)
    assert state(sim, name)["calls"] == 1  # the SDK did not retry
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value.args)
    if status == 429:
        assert isinstance(caught.value, RateLimited) and caught.value.retry_after == 2.5


@pytest.mark.parametrize("name", list(MODELS))
def test_a_hanging_provider_times_out_as_transient(make: Factory, sim: httpx.Client, name: str) -> None:
    sim.post(f"/_sim/providers/{name}", json={"fail_next": 1, "error_status": "timeout", "hang_ms": 5000})
    with pytest.raises(TransientError) as caught:
        ask(make(name, timeout=0.3), "plan", "Goal: g")
    assert type(caught.value) is TransientError and caught.value.status is None
    assert "timed out" in str(caught.value) and SECRET not in str(caught.value)
    assert state(sim, name)["calls"] == 1


@pytest.mark.parametrize("name", list(MODELS))
def test_a_refused_connection_is_transient(make: Factory, name: str) -> None:
    with pytest.raises(TransientError) as caught:
        ask(make(name, url=f"http://127.0.0.1:{free_port()}"), "plan", "Goal: g")
    assert caught.value.provider == name and SECRET not in str(caught.value)


@pytest.mark.parametrize("name", ["claude", "codex"])
def test_streaming_faults_map_the_same_way(make: Factory, sim: httpx.Client, name: str) -> None:
    sim.post(f"/_sim/providers/{name}", json={"fail_next": 1, "error_status": 429, "retry_after_s": 7})
    with pytest.raises(RateLimited) as caught:
        ask(make(name, stream=True), "plan", "Goal: g")
    assert caught.value.retry_after == 7.0 and state(sim, name)["calls"] == 1


def test_the_key_a_provider_echoes_is_redacted(make: Factory, sim: httpx.Client) -> None:
    sim.post("/_sim/providers/claude", json={"fail_next": 1, "error_status": 401})
    with pytest.raises(ProviderDown) as caught:
        ask(make("claude"), "plan", "Goal: g")
    assert "[redacted]" in str(caught.value) and SECRET not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# --- registry -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return load_fleet(DEFAULT_FLEET_FILE)


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "OLLAMA_HOST",
        "ANTHROPIC_BASE_URL",
        "OPENAI_BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(f"SWITCHYARD_{var}", raising=False)


@pytest.mark.usefixtures("no_env")
def test_nothing_is_available_without_keys_or_the_simulator(fleet: Fleet) -> None:
    settings = Settings(simulate=False)
    assert (
        available("claude", settings)
        == "ANTHROPIC_API_KEY is not set and the simulator is off (SWITCHYARD_SIMULATE=false)"
    )
    assert "OPENAI_API_KEY is not set" in (available("codex", settings) or "")
    assert "OLLAMA_HOST is not set" in (available("ollama", settings) or "")
    with pytest.raises(ProviderDown, match="ANTHROPIC_API_KEY is not set"):
        build_provider("claude", settings, fleet)
    with pytest.raises(ConfigError, match="unknown provider"):
        available("gemini", settings)


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize("name", list(MODELS))
def test_the_simulator_serves_providers_without_keys(fleet: Fleet, server: BackgroundSimulator, name: str) -> None:
    settings = Settings(simulate=True, simulator_url=server.url)
    assert available(name, settings) is None
    provider = build_provider(name, settings, fleet)
    try:
        response = ask(provider, "pr_integ", "Branch: main")
        assert json.loads(response.text)["decision"] == "merge"
        assert getattr(provider, "timeout", None) == fleet.limits.provider_timeout_s
    finally:
        provider.close()  # type: ignore[attr-defined]


@pytest.mark.usefixtures("no_env")
def test_real_keys_win_over_the_simulator(fleet: Fleet) -> None:
    settings = Settings(
        simulate=True,
        anthropic_api_key=SECRET,
        anthropic_base_url="https://proxy.example/anthropic",
        openai_api_key=SECRET,
        ollama_host="http://gpu-box:11434",
    )
    claude, codex, local = (build_provider(name, settings, fleet) for name in ("claude", "codex", "ollama"))
    assert isinstance(claude, ClaudeProvider) and claude.base_url == "https://proxy.example/anthropic"
    assert isinstance(codex, CodexProvider) and codex.base_url is None
    assert isinstance(local, OllamaProvider) and local.host == "http://gpu-box:11434"
    assert SECRET not in repr(claude) and SECRET not in repr(codex)
    for provider in (claude, codex, local):
        provider.close()
