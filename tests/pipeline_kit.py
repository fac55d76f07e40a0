"""What the pipeline tests share: a fleet context on a real git workspace, the in-process Runner driven over
every runnable task, and a provider factory that lets a test script some answers.

Scripted answers still go through the simulator over HTTP (the call is made and charged as usual); only the
text the handler sees is replaced, for the answers the simulator cannot give (request changes, a broken
resolution, a custom plan).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import NO_PROVIDER_KEYS, REPO

from cli.envs import init_environments
from environments.git import run_git
from environments.sample import make_sample_repo
from providers.base import Provider, ProviderRequest, ProviderResponse
from providers.registry import build_provider
from simulator.answers import task_kind
from store import pipeline as rows
from store.db import session_scope
from store.models import TERMINAL_STATUSES, Task
from store.queries import task_detail
from switchyard.settings import Settings
from tasks.attempt import Deferred, Runner
from tasks.context import Context, build_context

# (kind, request) -> replacement text, or None to keep the simulator's answer
Script = Callable[[str, ProviderRequest], str | None]


def fleet_file(tmp_path: Path, **replacements: str) -> Path:
    """The default fleet with quick retries and the given text replacements."""
    text = (REPO / "switchyard.toml").read_text()
    text = text.replace("initial_s = 1.0", "initial_s = 0.05").replace("jitter_s = 1.0", "jitter_s = 0.0")
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def make_context(tmp_path: Path, simulator_url: str, broker_url: str, database_url: str, **fleet: str) -> Context:
    settings = Settings(
        **NO_PROVIDER_KEYS,
        home=tmp_path / "home",
        broker_url=broker_url,
        database_url=database_url,
        simulate=True,
        simulator_url=simulator_url,
        fleet_file=fleet_file(tmp_path, **fleet),
    )
    ctx = build_context(settings)
    sample = make_sample_repo(tmp_path / "sample", feature_branches=3)
    init_environments(ctx, str(sample), tmp_path / "workspace", ["dev1", "dev2"])
    return ctx


def workspace(ctx: Context) -> Path:
    return ctx.settings.home.parent / "workspace"


def git(ctx: Context, *args: str) -> str:
    return run_git(list(args), cwd=workspace(ctx) / ".repo").strip()


@dataclasses.dataclass
class ScriptedProvider:
    inner: Provider
    script: Script
    name: str = ""
    transport: str = "api"

    def call(self, request: ProviderRequest) -> ProviderResponse:
        response = self.inner.call(request)
        text = self.script(task_kind(request.system) or "", request)
        return response if text is None else dataclasses.replace(response, text=text)

    def close(self) -> None:
        self.inner.close()


def factory(script: Script | None = None) -> Callable[[str, Context, str], Provider]:
    def make(name: str, ctx: Context, transport: str) -> Provider:
        inner = build_provider(name, ctx.settings, ctx.fleet, transport=transport)
        return ScriptedProvider(inner, script, name, transport) if script else inner

    return make


def runnable(ctx: Context) -> list[str]:
    """Tasks a worker would run now: queued, or deferred by a gate (not held for dependencies), oldest first."""
    with session_scope(ctx.database_url) as session:
        tasks = session.query(Task).filter(Task.status.in_(("queued", "deferred", "running")))
        return [
            t.id
            for t in tasks.order_by(Task.created_at, Task.id)
            if not (t.status == "deferred" and (t.reason or "").startswith(rows.NO_MESSAGE))
        ]


def drain(ctx: Context, script: Script | None = None, *, rounds: int = 40) -> list[str]:
    """Run every runnable task with the in-process Runner until none is left; returns ids in finishing order."""
    finished: list[str] = []
    runner = Runner(ctx, make_provider=factory(script), sleep=lambda _: None)
    for _ in range(rounds):
        ids = runnable(ctx)
        if not ids:
            return finished
        progress = False
        for task_id in ids:
            try:
                status = runner.run(task_id)
            except Deferred:
                continue
            progress = progress or status in TERMINAL_STATUSES
            finished += [task_id] if status in TERMINAL_STATUSES else []
        if not progress:
            time.sleep(0.05)
    raise AssertionError(f"tasks still runnable after {rounds} rounds: {runnable(ctx)}")


def detail(ctx: Context, task_id: str) -> dict[str, Any]:
    with session_scope(ctx.database_url) as session:
        found = task_detail(session, task_id)
    assert found is not None, task_id
    return found


def tasks(ctx: Context) -> list[Task]:
    with session_scope(ctx.database_url) as session:
        found = session.query(Task).order_by(Task.created_at, Task.id).all()
        session.expunge_all()
        return found


def verdict(kind_verdict: str, comment: str = "Please handle the empty name.") -> str:
    import json

    return json.dumps(
        {
            "verdict": kind_verdict,
            "summary": f"{kind_verdict} from the script",
            "comments": [{"file": "app/greeting.py", "line": 6, "body": comment}],
        }
    )
