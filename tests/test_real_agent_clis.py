"""The real Claude Code and Codex CLIs (pinned, installed by `make agent-clis` into .agent-clis/) run by the
cli transports in a git worktree against the simulator over HTTP: answers, usage, cost, hold, errors.

`make test` installs them first; in CI a missing CLI fails these tests, elsewhere it skips them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from conftest import IN_CI, NO_PROVIDER_KEYS, REPO

from providers.base import ProviderRequest, ProviderResponse
from providers.registry import build_provider
from simulator.server import BackgroundSimulator
from switchyard.errors import HoldExceeded, Overloaded, ProviderDown, RateLimited
from switchyard.fleet import Fleet, load_fleet
from switchyard.pricing import cost_micros
from switchyard.settings import DEFAULT_FLEET_FILE, Settings

BIN = REPO / ".agent-clis" / "node_modules" / ".bin"
MODELS = {"claude": "claude-haiku-4-5", "codex": "gpt-5.3-codex"}
SECRET = "sk-test-SECRET-0123456789abcdef"
SYSTEM = "You are a reviewer working in a Switchyard fleet.\nTask kind: pr_review\n\nReview the diff."
DIFF = "diff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n@@ -3,4 +3,6 @@ def main():\n+    run()\n"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
pytestmark = pytest.mark.integration


def require_clis() -> None:
    missing = [name for name in MODELS if not (BIN / name).exists()]
    if not missing:
        return
    message = f"the real agent CLIs {missing} are not installed in {BIN.parent.parent}; run `make agent-clis`"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return load_fleet(DEFAULT_FLEET_FILE)


@pytest.fixture
def home() -> Iterator[Path]:
    """A Switchyard home outside /tmp: Codex will not create its helper links under a temporary dir."""
    require_clis()
    path = REPO / ".agent-clis" / "test-homes" / uuid.uuid4().hex[:12]
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    """A task's worktree of a real repository, on its own branch."""
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**GIT_ENV, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    (repo / "app.py").write_text("def main():\n    pass\n")
    for args in (["init", "-q", "-b", "main"], ["add", "app.py"], ["commit", "-q", "-m", "start"]):
        subprocess.run(["git", *args], cwd=repo, check=True, env=env)
    subprocess.run(
        ["git", "worktree", "add", "-q", "-b", "task/1", str(tmp_path / "wt")], cwd=repo, check=True, env=env
    )
    return tmp_path / "wt"


@dataclass
class Rig:
    """Everything a real-CLI test runs with: a Switchyard home, a worktree, the simulator and the fleet."""

    home: Path
    worktree: Path
    server: BackgroundSimulator
    sim: httpx.Client
    fleet: Fleet

    def settings(self, **keys: str) -> Settings:
        """Simulated settings, or (with keys) real-looking keys and base URLs that point at the simulator."""
        return Settings(
            home=self.home,
            simulate=not keys,
            simulator_url=self.server.url,
            claude_cli=str(BIN / "claude"),
            codex_cli=str(BIN / "codex"),
            **{**NO_PROVIDER_KEYS, **keys},  # type: ignore[arg-type]
        )

    def review(self, name: str, hold: float = 0.5, **keys: str) -> ProviderResponse:
        provider = build_provider(name, self.settings(**keys), self.fleet, transport="cli")
        request = ProviderRequest(
            model=MODELS[name],
            system=SYSTEM,
            prompt=f"Please review.\n\n{DIFF}",
            timeout_s=90.0,
            workdir=self.worktree,
            environment="dev1",
            max_cost_usd=hold,
        )
        return provider.call(request)

    def calls(self, name: str) -> int:
        count: int = self.sim.get("/_sim/state").json()["providers"][name]["calls"]
        return count


@pytest.fixture
def rig(home: Path, worktree: Path, server: BackgroundSimulator, sim: httpx.Client, fleet: Fleet) -> Rig:
    return Rig(home, worktree, server, sim, fleet)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_real_cli_reviews_in_the_worktree_with_usage_and_cost(name: str, rig: Rig) -> None:
    response = rig.review(name)
    verdict = json.loads(response.text)
    assert verdict["verdict"] == "approve" and [(c["file"], c["line"]) for c in verdict["comments"]] == [("app.py", 3)]
    assert (response.provider, response.transport) == (name, "cli")
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    price = rig.fleet.price(name, MODELS[name], datetime.now(UTC).date())[1]
    ours = cost_micros(response.usage, price)
    assert ours > 0
    if name == "claude":  # Claude Code prices its own session; our normalized usage must give the same figure
        assert response.reported_cost_usd is not None
        assert abs(round(response.reported_cost_usd * 1_000_000) - ours) <= 1
    config = rig.settings().data_dir / "agents" / name / "dev1" / "config"
    assert any(config.iterdir()), f"the {name} CLI kept nothing in its private config dir {config}"
    assert rig.calls(name) >= 1


@pytest.mark.parametrize("name", list(MODELS))
def test_the_real_cli_stops_at_the_hold(name: str, rig: Rig) -> None:
    with pytest.raises(HoldExceeded) as caught:
        rig.review(name, hold=0.0001)
    assert caught.value.cost_usd > 0.0001 and "hold of $0.000100" in str(caught.value)


@pytest.mark.parametrize(
    "case",
    [("claude", 529, Overloaded), ("codex", 429, RateLimited), ("codex", 401, ProviderDown)],
    ids=["claude-529", "codex-429", "codex-401"],
)
def test_the_real_cli_failures_map_to_the_error_tree_without_the_key(
    case: tuple[str, int, type[Exception]], rig: Rig
) -> None:
    name, status, error = case
    rig.sim.post(f"/_sim/providers/{name}", json={"fail_next": 5, "error_status": status}).raise_for_status()
    keys = {"anthropic_api_key": SECRET, "anthropic_base_url": rig.server.url}
    keys |= {"openai_api_key": SECRET, "openai_base_url": f"{rig.server.url}/v1"}
    with pytest.raises(error) as caught:
        rig.review(name, **keys)
    assert type(caught.value) is error and SECRET not in str(caught.value)
    calls = rig.calls(name)
    assert calls == 1, f"the {name} CLI retried on its own ({calls} calls); tenacity must be the one retry loop"
