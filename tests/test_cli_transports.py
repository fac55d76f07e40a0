"""The agent-CLI transports against stand-in executables on PATH (tests/fake_cli) that print the documented
JSON and JSONL: flags, working directory, private config per environment, the hold, errors and timeouts.

The stand-ins record what they were started with in ``$HOME/calls.jsonl`` and obey ``fake: …`` lines in
the prompt (see their docstrings). The real CLIs against the simulator are in test_real_agent_clis.py.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import NO_PROVIDER_KEYS, patient

from providers import registry
from providers.base import ProviderRequest
from providers.claude import ClaudeProvider
from providers.claude_cli import ClaudeCliProvider, normalize_usage
from providers.codex_cli import CodexCliProvider
from providers.registry import build_provider, cli_available, cli_unavailable
from switchyard.errors import (
    BadAnswer,
    ConfigError,
    HoldExceeded,
    Overloaded,
    ProviderDown,
    ProviderError,
    RateLimited,
    RequestRejected,
    TransientError,
)
from switchyard.fleet import Fleet, load_fleet
from switchyard.pricing import cost_micros
from switchyard.settings import DEFAULT_FLEET_FILE, Settings
from switchyard.usage import Usage

FAKE_DIR = Path(__file__).resolve().parent / "fake_cli"
SECRET = "sk-test-SECRET-0123456789abcdef"
MODELS = {"claude": "claude-sonnet-5", "codex": "gpt-5.3-codex"}
SYSTEM = "You are a careful engineer.\nTask kind: pr_impl\n"
BASE_URLS = {"claude": "http://127.0.0.1:9", "codex": "http://127.0.0.1:9/v1"}


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return load_fleet(DEFAULT_FLEET_FILE)


@pytest.fixture
def fake_path(monkeypatch: pytest.MonkeyPatch) -> str:
    """PATH with the stand-ins first, as a worker's environment would have the real CLIs, then this Python
    (the stand-ins' ``env python3``; a pyenv shim would cost 0.3 s a start)."""
    path = os.pathsep.join((str(FAKE_DIR), str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)))
    monkeypatch.setenv("PATH", path)
    return path


@pytest.fixture
def settings(tmp_path: Path, fake_path: str) -> Settings:
    return Settings(
        home=tmp_path / "home",
        simulate=False,
        **{  # type: ignore[arg-type]
            **NO_PROVIDER_KEYS,
            "anthropic_api_key": SECRET,
            "openai_api_key": SECRET,
            "anthropic_base_url": BASE_URLS["claude"],
            "openai_base_url": BASE_URLS["codex"],
        },
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "worktree"
    path.mkdir()
    (path / "README.md").write_text("a worktree\n")
    return path


def request(name: str, workdir: Path | None, prompt: str = "Implement it.", **changes: Any) -> ProviderRequest:
    fields: dict[str, Any] = {
        "model": MODELS[name],
        "system": SYSTEM,
        "prompt": prompt,
        "timeout_s": 20.0,
        "workdir": workdir,
        "environment": "dev1",
        "max_cost_usd": 0.5,
    }
    fields.update(changes)
    return ProviderRequest(**fields)


def calls(settings: Settings, name: str, environment: str = "dev1") -> list[dict[str, Any]]:
    log = agent_root(settings, name, environment) / "home" / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]


def agent_root(settings: Settings, name: str, environment: str) -> Path:
    return settings.data_dir / "agents" / name / environment


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in {"Z", "X"}


def cli(name: str, settings: Settings, fleet: Fleet) -> ClaudeCliProvider | CodexCliProvider:
    provider = build_provider(name, settings, fleet, transport="cli")
    assert isinstance(provider, ClaudeCliProvider | CodexCliProvider)
    return provider


# --- Claude Code ---------------------------------------------------------------------------------------------


def test_claude_runs_in_the_worktree_with_the_hold_and_a_private_config(
    settings: Settings, fleet: Fleet, workdir: Path, fake_path: str
) -> None:
    response = cli("claude", settings, fleet).call(request("claude", workdir, "Implement the cost report."))
    assert (response.provider, response.transport, response.model) == ("claude", "cli", "claude-sonnet-5")
    assert response.text == "Done: edited agent-edit.txt" and response.response_id == "fake-session"
    assert response.reported_cost_usd == pytest.approx(0.0123)
    assert response.usage == Usage(
        input_tokens=1200,
        cached_input_tokens=5000,
        cache_write_tokens=600,
        cache_write_1h_tokens=200,
        output_tokens=300,
    )
    assert (workdir / "agent-edit.txt").read_text() == "edited by the fake claude\n"
    [call] = calls(settings, "claude")
    argv, env = call["argv"], call["env"]
    assert argv[0] == str(FAKE_DIR / "claude") and argv[1:5] == ["-p", "--output-format", "json", "--model"]
    assert argv[argv.index("--max-budget-usd") + 1] == "0.500000"
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    assert argv[argv.index("--append-system-prompt") + 1] == SYSTEM
    assert call["cwd"] == str(workdir) and call["stdin"] == "Implement the cost report."
    root = agent_root(settings, "claude", "dev1")
    assert env["CLAUDE_CONFIG_DIR"] == str(root / "config") and env["HOME"] == str(root / "home")
    assert env["ANTHROPIC_API_KEY"] == SECRET and env["ANTHROPIC_BASE_URL"] == BASE_URLS["claude"]
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1" and env["CLAUDE_CODE_MAX_RETRIES"] == "0"
    assert env["PATH"] == fake_path and "OPENAI_API_KEY" not in env
    assert not any(SECRET in arg for arg in argv)


def test_each_environment_gets_its_own_config_directory(settings: Settings, fleet: Fleet, workdir: Path) -> None:
    for name in ("claude", "codex"):
        provider = cli(name, settings, fleet)
        for environment in ("dev1", "dev2"):
            provider.call(request(name, workdir, environment=environment))
        variable = "CLAUDE_CONFIG_DIR" if name == "claude" else "CODEX_HOME"
        dirs = {calls(settings, name, env)[0]["env"][variable] for env in ("dev1", "dev2")}
        assert dirs == {str(agent_root(settings, name, env) / "config") for env in ("dev1", "dev2")}


def test_claude_stopped_at_the_hold_fails_the_attempt_with_what_it_spent(
    settings: Settings, fleet: Fleet, workdir: Path
) -> None:
    with pytest.raises(HoldExceeded) as caught:
        cli("claude", settings, fleet).call(request("claude", workdir, "fake: budget", max_cost_usd=0.02))
    assert caught.value.cost_usd == pytest.approx(0.022)
    assert "hold of $0.020000" in str(caught.value) and caught.value.provider == "claude"
    assert not caught.value.retryable and not caught.value.counts_against_provider


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, RateLimited), (529, Overloaded), (500, TransientError), (401, ProviderDown), (403, ProviderDown)],
)
def test_claude_api_errors_map_to_the_error_tree(
    settings: Settings, fleet: Fleet, workdir: Path, status: int, error: type[ProviderError]
) -> None:
    with pytest.raises(error) as caught:
        cli("claude", settings, fleet).call(request("claude", workdir, f"fake: status={status}"))
    assert type(caught.value) is error and caught.value.status == status
    assert SECRET not in str(caught.value)
    if status == 401:
        assert "[redacted]" in str(caught.value)


def test_claude_that_crashes_says_so_with_its_stderr_and_no_key(
    settings: Settings, fleet: Fleet, workdir: Path
) -> None:
    with pytest.raises(ProviderDown) as caught:
        cli("claude", settings, fleet).call(request("claude", workdir, "fake: crash"))
    message = str(caught.value)
    assert "exited with status 3" in message and "fatal: could not start (key [redacted])" in message
    assert SECRET not in message


def test_claude_output_that_is_not_json_is_a_bad_answer(settings: Settings, fleet: Fleet, workdir: Path) -> None:
    with pytest.raises(BadAnswer, match=r"no JSON result.*Welcome to Claude Code"):
        cli("claude", settings, fleet).call(request("claude", workdir, "fake: garbage"))


def test_claude_usage_prefers_model_usage_summed_over_models() -> None:
    result = {
        "usage": {"input_tokens": 0, "output_tokens": 0},
        "modelUsage": {
            "claude-sonnet-5": {"inputTokens": 10, "outputTokens": 5, "cacheReadInputTokens": 100},
            "claude-haiku-4-5": {"inputTokens": 7, "outputTokens": 3, "cacheCreationInputTokens": 40},
        },
    }
    assert normalize_usage(result) == Usage(
        input_tokens=17, cached_input_tokens=100, cache_write_tokens=40, output_tokens=8
    )
    plain = {"usage": {"input_tokens": 3, "output_tokens": 2, "cache_creation_input_tokens": 9}}
    assert normalize_usage(plain) == Usage(input_tokens=3, cache_write_tokens=9, output_tokens=2)


# --- Codex ---------------------------------------------------------------------------------------------------


def test_codex_runs_in_the_worktree_and_sums_its_turns(
    settings: Settings, fleet: Fleet, workdir: Path, fake_path: str
) -> None:
    prompt = "Implement it.\nfake: turns=3\nfake: tokens=1000"
    response = cli("codex", settings, fleet).call(request("codex", workdir, prompt))
    assert (response.provider, response.transport, response.text) == ("codex", "cli", "answer of turn 3")
    assert response.usage == Usage(input_tokens=1500, cached_input_tokens=1500, output_tokens=300, reasoning_tokens=150)
    assert response.reported_cost_usd is None and response.response_id == "fake-thread"
    assert (workdir / "agent-edit.txt").read_text() == "edited by the fake codex\n"
    [call] = calls(settings, "codex")
    argv, env = call["argv"], call["env"]
    assert argv[1:4] == ["exec", "--json", "--skip-git-repo-check"] and argv[-1] == "-"
    assert argv[argv.index("-C") + 1] == str(workdir) and argv[argv.index("-m") + 1] == "gpt-5.3-codex"
    assert argv[argv.index("--sandbox") + 1] == "workspace-write"
    overrides = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-c"]
    assert 'model_provider="switchyard"' in overrides and 'approval_policy="never"' in overrides
    assert f'model_providers.switchyard.base_url="{BASE_URLS["codex"]}"' in overrides
    assert 'model_providers.switchyard.env_key="OPENAI_API_KEY"' in overrides
    assert "model_providers.switchyard.request_max_retries=0" in overrides
    assert f"developer_instructions={json.dumps(SYSTEM)}" in overrides
    assert call["cwd"] == str(workdir) and call["stdin"] == prompt
    root = agent_root(settings, "codex", "dev1")
    assert env["CODEX_HOME"] == str(root / "config") and env["HOME"] == str(root / "home")
    assert env["OPENAI_API_KEY"] == SECRET and env["PATH"] == fake_path and "ANTHROPIC_API_KEY" not in env
    assert not any(SECRET in arg for arg in argv)


def test_codex_is_stopped_once_its_reported_usage_passes_the_hold(
    settings: Settings, fleet: Fleet, workdir: Path
) -> None:
    per_turn = Usage(input_tokens=50_000, cached_input_tokens=50_000, output_tokens=10_000, reasoning_tokens=5_000)
    price = fleet.price("codex", "gpt-5.3-codex", datetime.now(UTC).date())[1]
    turn_usd = cost_micros(per_turn, price) / 1e6  # about $0.236
    prompt = "fake: turns=6\nfake: tokens=100000"
    started = time.monotonic()
    with pytest.raises(HoldExceeded) as caught:
        cli("codex", settings, fleet).call(request("codex", workdir, prompt, max_cost_usd=1.5 * turn_usd))
    assert caught.value.cost_usd == pytest.approx(2 * turn_usd)
    printed = (agent_root(settings, "codex", "dev1") / "home" / "turns.log").read_text().splitlines()
    assert printed == ["turn 1", "turn 2"]  # stopped before turn 3, and never finished
    time.sleep(0.8)  # the time the stand-in would take to print the rest, had it not been stopped
    assert (agent_root(settings, "codex", "dev1") / "home" / "turns.log").read_text().splitlines() == printed
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "case",
    [("fail=401", ProviderDown, 401), ("fail=429", RateLimited, 429), ("demand", TransientError, None)],
    ids=["401", "429", "no-status"],
)
def test_codex_failed_turns_map_to_the_error_tree(
    settings: Settings, fleet: Fleet, workdir: Path, case: tuple[str, type[ProviderError], int | None]
) -> None:
    directive, error, status = case
    with pytest.raises(error) as caught:
        cli("codex", settings, fleet).call(request("codex", workdir, f"fake: {directive}"))
    assert type(caught.value) is error and caught.value.status == status
    assert SECRET not in str(caught.value)
    if status == 401:
        assert "[redacted]" in str(caught.value)


# --- both: timeouts, requests the transport refuses, the registry --------------------------------------------


@pytest.mark.parametrize("name", ["claude", "codex"])
def test_a_hung_cli_is_killed_with_everything_it_started(
    settings: Settings, fleet: Fleet, workdir: Path, name: str
) -> None:
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"after 1s") as caught:
        cli(name, settings, fleet).call(request(name, workdir, "fake: hang", timeout_s=1.0))
    assert type(caught.value) is TransientError and time.monotonic() - started < 8
    pids = [int(pid) for pid in (agent_root(settings, name, "dev1") / "home" / "pids").read_text().split()]
    deadline = time.monotonic() + patient(5)
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids), "the CLI or the command it started outlived the timeout"


@pytest.mark.parametrize("name", ["claude", "codex"])
def test_the_cli_transport_refuses_requests_without_a_worktree_or_a_hold(
    settings: Settings, fleet: Fleet, workdir: Path, name: str
) -> None:
    provider = cli(name, settings, fleet)
    with pytest.raises(RequestRejected, match="needs the task's worktree"):
        provider.call(request(name, None))
    with pytest.raises(RequestRejected, match="does not exist"):
        provider.call(request(name, workdir / "missing"))
    with pytest.raises(RequestRejected, match="needs a positive hold"):
        provider.call(request(name, workdir, max_cost_usd=None))
    with pytest.raises(RequestRejected, match="cannot name a directory"):
        provider.call(request(name, workdir, environment="../escape"))
    assert not (settings.data_dir / "agents").exists()


def test_registry_builds_cli_providers_only_where_the_cli_is_on_path(
    settings: Settings, fleet: Fleet, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert cli_available("claude", settings) and cli_available("codex", settings)
    assert not cli_available("ollama", settings) and "no agent CLI" in (cli_unavailable("ollama", settings) or "")
    assert isinstance(build_provider("claude", settings, fleet), ClaudeProvider)  # api stays the default
    codex = cli("codex", settings, fleet)
    assert isinstance(codex, CodexCliProvider) and codex.base_url == BASE_URLS["codex"]
    assert SECRET not in repr(codex) and SECRET not in repr(cli("claude", settings, fleet))
    with pytest.raises(ConfigError, match="unknown transport"):
        build_provider("claude", settings, fleet, transport="grpc")
    with pytest.raises(ConfigError, match="no cli transport"):
        build_provider("ollama", settings, fleet, transport="cli")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(registry, "PROJECT_CLIS", tmp_path / "no-install")
    assert not cli_available("claude", settings)
    reason = cli_unavailable("claude", settings) or ""
    assert "'claude' is neither on PATH nor in" in reason and "SWITCHYARD_CLAUDE_CLI" in reason
    with pytest.raises(ProviderDown, match="is neither on PATH"):
        build_provider("claude", settings, fleet, transport="cli")
    monkeypatch.setattr(registry, "PROJECT_CLIS", FAKE_DIR)  # as if `make agent-clis` had put it there
    assert cli_available("claude", settings)
    assert cli("claude", settings, fleet).executable == str(FAKE_DIR / "claude")
    explicit = settings.model_copy(update={"claude_cli": str(FAKE_DIR / "claude")})
    assert cli_available("claude", explicit)


def test_a_cli_removed_after_the_provider_was_built_is_reported_down(
    settings: Settings, fleet: Fleet, workdir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "bin" / "claude"
    copy.parent.mkdir()
    shutil.copy(FAKE_DIR / "claude", copy)
    provider = cli("claude", settings.model_copy(update={"claude_cli": str(copy)}), fleet)
    copy.unlink()
    with pytest.raises(ProviderDown, match=r"claude CLI .*/bin/claude cannot be started"):
        provider.call(request("claude", workdir))


def test_simulated_cli_providers_point_at_the_simulator(fleet: Fleet, tmp_path: Path, fake_path: str) -> None:
    settings = Settings(home=tmp_path, simulate=True, simulator_url="http://127.0.0.1:8790", **NO_PROVIDER_KEYS)  # type: ignore[arg-type]
    claude, codex = cli("claude", settings, fleet), cli("codex", settings, fleet)
    assert claude.base_url == "http://127.0.0.1:8790" and codex.base_url == "http://127.0.0.1:8790/v1"
    workdir = tmp_path / "wt"
    workdir.mkdir()
    claude.call(request("claude", workdir))
    assert calls(settings, "claude")[0]["env"]["ANTHROPIC_API_KEY"] == "simulated"
