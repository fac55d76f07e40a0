"""`switchyard simulator fault|heal|show`: the installed CLI against a running simulator, checked by real calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port

from simulator.server import BackgroundSimulator

SWITCHYARD = str(Path(sys.executable).parent / "switchyard")
MESSAGE = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def env(tmp_path: Path, server: BackgroundSimulator, sim: httpx.Client) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    base.update(SWITCHYARD_HOME=str(tmp_path / "home"), SWITCHYARD_SIMULATOR_URL=server.url, COLUMNS="200")
    return base


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SWITCHYARD, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def claude_call(sim: httpx.Client) -> httpx.Response:
    return sim.post("/v1/messages", json=MESSAGE, headers={"x-api-key": "sk-test", "anthropic-version": "2023-06-01"})


def test_fault_then_heal(env: dict[str, str], sim: httpx.Client) -> None:
    assert claude_call(sim).status_code == 200
    view = as_json(cli(env, "simulator", "fault", "claude", "--status", "503", "--json"))
    assert (view["provider"], view["error_rate"], view["error_status"]) == ("claude", 1.0, 503)
    assert [claude_call(sim).status_code for _ in range(3)] == [503, 503, 503]
    healed = as_json(cli(env, "simulator", "heal", "claude", "--json"))
    assert (healed["error_rate"], healed["calls"], healed["errors"]) == (0.0, 4, 3)
    assert claude_call(sim).status_code == 200


def test_rate_limit_with_retry_after_and_a_partial_error_rate(env: dict[str, str], sim: httpx.Client) -> None:
    args = ("--status", "429", "--retry-after", "7", "--error-rate", "1")
    view = as_json(cli(env, "simulator", "fault", "claude", *args, "--json"))
    assert (view["error_status"], view["retry_after_s"]) == (429, 7.0)
    refused = claude_call(sim)
    assert (refused.status_code, refused.headers["retry-after"]) == (429, "7")
    view = as_json(cli(env, "simulator", "fault", "claude", "--error-rate", "0", "--json"))
    assert view["error_rate"] == 0.0
    assert claude_call(sim).status_code == 200


def test_latency_alone_does_not_make_calls_fail(env: dict[str, str], sim: httpx.Client) -> None:
    view = as_json(cli(env, "simulator", "fault", "claude", "--latency-ms", "250", "--json"))
    assert (view["latency_ms"], view["error_rate"]) == (250, 0.0)
    response = claude_call(sim)
    assert response.status_code == 200
    assert response.elapsed.total_seconds() >= 0.25


def test_show_and_tables(env: dict[str, str]) -> None:
    done = cli(env, "simulator", "fault", "codex", "--status", "timeout")
    assert done.returncode == 0, done.stderr
    assert "Simulator: codex" in done.stdout and "timeout" in done.stdout
    state = as_json(cli(env, "simulator", "show", "--json"))
    assert state["providers"]["codex"]["error_status"] == "timeout"
    table = cli(env, "simulator", "show")
    assert table.returncode == 0 and all(name in table.stdout for name in ("claude", "codex", "ollama"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("fault", "gemini"), "unknown provider; known: ['claude', 'codex', 'ollama']"),
        (("heal", "gemini"), "unknown provider"),
        (("fault", "claude", "--status", "200"), "--status must be an HTTP error status 400-599 or 'timeout'"),
        (("fault", "claude", "--status", "slow"), "--status must be an HTTP error status"),
        (("fault", "claude", "--error-rate", "1.5"), "less than or equal to 1"),
    ],
)
def test_mistakes_get_one_clear_line(env: dict[str, str], args: tuple[str, ...], message: str) -> None:
    done = cli(env, "simulator", *args)
    assert done.returncode == 2, done.stdout
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_simulator_that_is_not_running_is_named(env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = cli({**env, "SWITCHYARD_SIMULATOR_URL": url}, "simulator", "heal", "claude")
    assert done.returncode == 3, done.stderr
    assert f"the simulator is not answering at {url}" in done.stderr
    assert "switchyard up --simulate" in done.stderr
    assert "Traceback" not in done.stderr
