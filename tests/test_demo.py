"""`switchyard demo` end to end, as a user runs it: the installed script, the embedded broker, SQLite, real
worker processes, Flower, the status API and the simulator. Then a second run, which must stop everything."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import REPO, free_port, port_open

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]  # two demo runs, at any load
SWITCHYARD = str(Path(sys.executable).parent / "switchyard")
GROUPS = {"high_level", "dev_workers", "pr_review", "pr_impl", "pr_integ"}
AGENT_CLIS = REPO / ".agent-clis" / "node_modules" / ".bin"  # `make agent-clis`
SECRET_KEYS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OLLAMA_HOST", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL")


def demo_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_") and k not in SECRET_KEYS}
    env.update(
        SWITCHYARD_HOME=str(home),
        SWITCHYARD_BROKER_PORT=str(free_port()),
        SWITCHYARD_API_PORT=str(free_port()),
        SWITCHYARD_FLOWER_PORT=str(free_port()),
        SWITCHYARD_SIMULATOR_PORT=str(free_port()),
        COLUMNS="160",
    )
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SWITCHYARD, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def cli_json(env: dict[str, str], *args: str) -> Any:
    done = cli(env, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def ports(env: dict[str, str]) -> list[int]:
    names = ("BROKER", "API", "FLOWER", "SIMULATOR")
    return [int(env[f"SWITCHYARD_{name}_PORT"]) for name in names]


def check_pipeline(env: dict[str, str], tasks: list[dict[str, Any]]) -> None:
    """In every environment: implement → review by another provider → integrate, then promoted to staging."""
    by_id = {t["id"]: t for t in tasks}
    workspace = Path(env["SWITCHYARD_HOME"]) / "demo" / "workspace"
    for name in ("dev1", "dev2", "dev3", "dev4", "dev5"):
        integs = [t for t in tasks if t["kind"] == "pr_integ" and t["environment"] == name]
        # the submitted pr_impl's integration (a plan's sub-tasks land through the merge queue too)
        integ = next(t for t in integs if by_id[by_id[t["parent_id"]]["parent_id"]]["parent_id"] is None)
        review = by_id[integ["parent_id"]]
        impl = by_id[review["parent_id"]]
        assert (review["kind"], impl["kind"]) == ("pr_review", "pr_impl")
        plan = next(t for t in tasks if t["kind"] == "plan" and t["environment"] == name)
        landed = cli_json(env, "tasks", "show", plan["id"])["result"]["data"]
        assert landed["outcome"] == "succeeded" and all(sub["landed"] for sub in landed["subtasks"])
        assert review["provider"] != impl["provider"]
        tips = [git(workspace, "rev-parse", f"env/{name}{suffix}") for suffix in ("", "-qa", "-staging")]
        assert len(set(tips)) == 1, tips  # promoted through qa to staging
        detail = cli_json(env, "tasks", "show", integ["id"])
        assert detail["merges"][0]["status"] == "merged"


def check_drill(env: dict[str, str], tasks: list[dict[str, Any]]) -> None:
    """Claude failed every call during the drill: the five reviews ran on Ollama, and say why."""
    drill = [t for t in tasks if t["kind"] == "pr_review" and t["parent_id"] is None]
    assert len(drill) == 5 and {t["provider"] for t in drill} == {"ollama"}
    for task in drill:
        attempts = cli_json(env, "tasks", "show", task["id"])["attempts"]
        reasons = " ".join(f"{a['error_class'] or ''} {a['route_note'] or ''}" for a in attempts)
        assert "claude" in reasons or any(a["provider"] == "claude" for a in attempts), attempts


def check_agent_clis(env: dict[str, str], tasks: list[dict[str, Any]], stdout: str) -> None:
    """With the real agent CLIs installed, dev1's change was made by the Codex CLI and dev2's by Claude Code."""
    if not all(shutil.which(name) or (AGENT_CLIS / name).exists() for name in ("claude", "codex")):
        assert "Agent CLIs: skipped" in stdout
        return
    impls = {t["environment"]: t for t in tasks if t["kind"] == "pr_impl"}
    for environment, name in (("dev1", "codex"), ("dev2", "claude")):
        attempts = cli_json(env, "tasks", "show", impls[environment]["id"])["attempts"]
        assert [(a["provider"], a["transport"], a["status"]) for a in attempts] == [(name, "cli", "succeeded")]


def git(workspace: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(workspace / ".repo"), *args], capture_output=True, text=True, check=True
    ).stdout


def test_demo_runs_the_fleet_and_stops_it(tmp_path: Path) -> None:
    user_db = tmp_path / "users-own.db"  # the user's database, exported in their shell: the demo never touches it
    env = {**demo_env(tmp_path / "home"), "SWITCHYARD_DATABASE_URL": f"sqlite:///{user_db}"}
    run = cli(env, "demo", "--keep-running", timeout=900)  # startup alone can take minutes at load 15
    assert not user_db.exists() and not (tmp_path / "home" / "development").exists()
    env = {**env, "SWITCHYARD_PROFILE": "demo"}  # the demo's own profile: its tasks, spend and fleet
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Results per environment" in run.stdout and "Cost per provider" in run.stdout
    assert "Tasks that fell back, and why" in run.stdout
    assert "Savings by group against claude-opus-4-5" in run.stdout and "reconciled." in run.stdout
    try:
        tasks = cli_json(env, "tasks", "list")
        assert len(tasks) >= 40
        assert {t["status"] for t in tasks} == {"succeeded"}
        check_pipeline(env, tasks)
        check_drill(env, tasks)
        check_agent_clis(env, tasks, run.stdout)
        assert {t["environment"] for t in tasks} == {"dev1", "dev2", "dev3", "dev4", "dev5"}
        assert {t["group"] for t in tasks} == GROUPS
        assert all(t["provider"] and t["model"] and isinstance(t["cost_usd"], float) for t in tasks)
        assert all(t["cost_usd"] > 0 for t in tasks if t["provider"] in ("claude", "codex"))

        groups = cli_json(env, "status", "--groups")["groups"]
        assert {g["name"]: g["live_workers"] for g in groups} == dict.fromkeys(GROUPS, 1)

        flower = httpx.get(f"http://127.0.0.1:{env['SWITCHYARD_FLOWER_PORT']}/api/workers?refresh=1", timeout=30)
        assert flower.status_code == 200
        host = socket.gethostname()
        assert set(flower.json()) == {f"{group}@{host}" for group in GROUPS}
    finally:
        stopped = cli(env, "down")
    assert stopped.returncode == 0, stopped.stderr
    run_dir = tmp_path / "home" / "demo" / "run"
    assert not list(run_dir.glob("*.pid*"))
    assert not any(port_open("127.0.0.1", port) for port in ports(env))

    again = cli(env, "demo", timeout=900)  # re-runnable on the same data, and stops all it started
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert not list(run_dir.glob("*.pid*"))
    assert not any(port_open("127.0.0.1", port) for port in ports(env))
    assert len(cli_json(env, "tasks", "list")) >= 80
    assert not user_db.exists()


def test_the_next_steps_after_the_demo_name_its_profile() -> None:
    """Printed at the end of the demo: a bare `switchyard down` would stop the user's own fleet, not the demo's."""
    from cli.demo_run import next_steps

    text = next_steps("127.0.0.1", 5555, 8700)
    assert "http://127.0.0.1:5555" in text and "http://127.0.0.1:8700" in text
    for command in ("tasks show ID", "status --providers", "budget list", "down"):
        assert f"`SWITCHYARD_PROFILE=demo switchyard {command}`" in text
    assert "`switchyard down`" not in text
