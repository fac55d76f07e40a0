"""The real Claude Code and Codex CLIs (pinned, installed by `make agent-clis` into .agent-clis/) run by the
cli transports in a git worktree against the simulator over HTTP: answers, usage, cost, hold, errors; and a
pr_impl through each CLI (editing with its own tools) reviewed and merged by real workers.

`make test` installs them first; in CI a missing CLI fails these tests, elsewhere it skips them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from conftest import IN_CI, NO_PROVIDER_KEYS, REPO, flushed_redis, free_port, postgres_database

from cli.envs import init_environments
from environments.git import run_git
from environments.sample import make_sample_repo
from providers.base import ProviderRequest, ProviderResponse
from providers.registry import build_provider
from simulator.server import BackgroundSimulator
from store.db import session_scope
from store.models import TERMINAL_STATUSES
from store.queries import task_detail
from switchyard.errors import HoldExceeded, Overloaded, ProviderDown, RateLimited
from switchyard.fleet import Fleet, load_fleet
from switchyard.pricing import cost_micros
from switchyard.settings import DEFAULT_FLEET_FILE, Settings
from tasks.context import Context, build_context
from tasks.kinds.base import system_prompt
from tasks.submit import submit
from workers import launcher

BIN = REPO / ".agent-clis" / "node_modules" / ".bin"
MODELS = {"claude": "claude-haiku-4-5", "codex": "gpt-5.3-codex"}
SECRET = "sk-test-SECRET-0123456789abcdef"
SYSTEM = "You are a reviewer working in a Switchyard fleet.\nTask kind: pr_review\n\nReview the diff."
DIFF = "diff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n@@ -3,4 +3,6 @@ def main():\n+    run()\n"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
PIPELINE_SERVICES = {"simulator", "worker-pr_review", "worker-pr_impl", "worker-pr_integ"}
T = TypeVar("T")
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
        return self.ask(name, SYSTEM, f"Please review.\n\n{DIFF}", hold, **keys)

    def ask(self, name: str, system: str, prompt: str, hold: float = 0.5, **keys: str) -> ProviderResponse:
        provider = build_provider(name, self.settings(**keys), self.fleet, transport="cli")
        request = ProviderRequest(
            model=MODELS[name],
            system=system,
            prompt=prompt,
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
def test_the_real_cli_adds_its_function_to_a_module_that_exists(name: str, rig: Rig) -> None:
    """The title's module is on the branch: Claude Code reads it and edits it, Codex patches it in place."""
    module = rig.worktree / "add_login_page.py"
    module.write_text('def add_login_page() -> str:\n    return "first"\n')
    prompt = "Task id: 0123456789abcdef\nTitle: Add login page\n\nFiles in task/1:\nadd_login_page.py\napp.py\n"
    response = rig.ask(name, system_prompt("pr_impl", "a software engineer", "Make the change."), prompt)
    assert response.text == "Added add_login_page_01234567() in add_login_page.py for: Add login page"
    text = module.read_text()
    assert text.startswith(
        'def add_login_page() -> str:\n    return "first"\n\n\ndef add_login_page_01234567() -> str:\n'
    )
    assert rig.calls(name) >= 2  # the tool call(s), then the closing message after their results


@pytest.mark.parametrize("name", list(MODELS))
def test_the_real_cli_resolves_a_conflict_in_the_worktree(name: str, rig: Rig) -> None:
    conflicted = "def main():\n<<<<<<< ours\n    run()\n=======\n    start()\n>>>>>>> theirs\n"
    (rig.worktree / "app.py").write_text(conflicted)
    prompt = f"Task id: 1\nConflicted files: app.py\n=== BEGIN FILE app.py ===\n{conflicted}\n=== END FILE app.py ===\n"
    response = rig.ask(name, system_prompt("resolve_conflict", "a software engineer", "Resolve it."), prompt)
    assert response.text == "Resolved the conflicts in app.py keeping both sides."
    assert (rig.worktree / "app.py").read_text() == "def main():\n    run()\n    start()\n"


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


# --- a cli-transport task through the whole pipeline, with real workers --------------------------------------


def cli_fleet(tmp_path: Path) -> Path:
    """The default fleet with pr_impl on the agent CLIs only (Codex first, then Claude Code), no free fallback:
    a task succeeds only if an agent CLI made the change."""
    text = (REPO / "switchyard.toml").read_text()
    group = 'kinds = ["pr_impl"]\nladder = ["codex", "ollama"]\n'
    kind = "[kinds.pr_impl]\nmax_output_tokens = 4096\nfree_fallback = true\n"
    assert group in text and kind in text, "the default fleet's pr_impl group changed; update cli_fleet()"
    text = text.replace(
        group, 'kinds = ["pr_impl"]\nladder = ["codex", "claude"]\ntransports = { codex = "cli", claude = "cli" }\n'
    )
    text = text.replace(kind, kind.replace("free_fallback = true", "free_fallback = false"))
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def wait_for(ctx: Context, check: Callable[[], T | None], what: str, timeout_s: float = 600.0) -> T:
    """Poll ``check`` until it gives a value; the limit is generous because two agent CLIs and five worker
    pools share a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def chain_done(ctx: Context, first: str) -> list[dict[str, Any]] | None:
    """Every task of the pipeline ``first`` starts, once it ended with its pr_integ (or with a failure)."""
    with session_scope(ctx.database_url) as session:
        chain = [task_detail(session, row["id"]) for row in (task_detail(session, first) or {}).get("chain", [])]
    tasks = [t for t in chain if t is not None]
    failed = [t for t in tasks if t["status"] in TERMINAL_STATUSES and t["status"] != "succeeded"]
    if failed:
        return tasks
    integ = [t for t in tasks if t["kind"] == "pr_integ"]
    return tasks if integ and integ[0]["status"] in TERMINAL_STATUSES else None


def test_both_clis_implement_and_the_pipeline_reviews_and_merges_their_commits(home: Path, tmp_path: Path) -> None:
    with postgres_database() as database_url:
        settings = Settings(
            **NO_PROVIDER_KEYS,  # type: ignore[arg-type]
            home=home,
            broker_url=flushed_redis(12),
            database_url=database_url,
            simulate=True,
            simulator_port=free_port(),
            api_port=free_port(),
            flower_port=free_port(),
            fleet_file=cli_fleet(tmp_path),
            claude_cli=str(BIN / "claude"),
            codex_cli=str(BIN / "codex"),
        )
        ctx = build_context(settings)
        sample = make_sample_repo(tmp_path / "sample", feature_branches=0)
        init_environments(ctx, str(sample), tmp_path / "workspace", ["dev1"])
        launcher.up(settings, ctx.fleet, simulate=True, services=PIPELINE_SERVICES, on_event=lambda _: None)
        try:
            by_codex = submit({"kind": "pr_impl", "environment": "dev1", "title": "Add login page"}, context=ctx)
            by_claude = submit(
                {"kind": "pr_impl", "environment": "dev1", "title": "Add logout page", "avoid_providers": ["codex"]},
                context=ctx,
            )
            chains = {
                name: wait_for(ctx, lambda first=first: chain_done(ctx, first), f"the pipeline of {name}'s task")
                for name, first in (("codex", by_codex), ("claude", by_claude))
            }
        finally:
            launcher.down(settings, on_event=lambda _: None)
        repo = tmp_path / "workspace" / ".repo"
        for name, (module, function) in {
            "codex": ("add_login_page.py", "add_login_page"),
            "claude": ("add_logout_page.py", "add_logout_page"),
        }.items():
            chain = chains[name]
            assert [(t["kind"], t["status"]) for t in chain] == [
                ("pr_impl", "succeeded"),
                ("pr_review", "succeeded"),
                ("pr_integ", "succeeded"),
            ], f"{name}: {[(t['kind'], t['status'], t.get('reason')) for t in chain]}"
            impl = chain[0]
            assert [(a["provider"], a["transport"], a["status"]) for a in impl["attempts"]] == [
                (name, "cli", "succeeded")
            ]
            assert impl["cost_usd"] > 0
            data = impl["result"]["data"]
            assert data["files"] == [module] and data["author"] == name
            # the agent's own edit, committed on the task branch, merged into the environment branch
            text = run_git(["show", f"env/dev1:{module}"], cwd=repo)
            assert f"def {function}() -> str:" in text
            merged = run_git(["branch", "--contains", data["commit"], "--list", "env/dev1"], cwd=repo)
            assert "env/dev1" in merged, f"{name}'s commit {data['commit'][:10]} is not on env/dev1"
