"""The CLI at the edge: an error gets one clear line, never a traceback, and nothing is half-written. Its exit
code says what to do: 2 fix the input, 3 start the service that did not answer, 1 look (refused otherwise).
Runs the installed `switchyard` script against SQLite with no broker running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Processes, free_port

from cli import exit_code_for
from environments.sample import make_sample_repo
from switchyard.errors import (
    ConfigError,
    FleetAlreadyRunning,
    GitError,
    InputError,
    LedgerUnavailable,
    NotFound,
    ServiceUnavailable,
    StateUnavailable,
    SwitchyardError,
)
from workers import pidfiles

SWITCHYARD = str(Path(sys.executable).parent / "switchyard")
SECRET_KEYS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OLLAMA_HOST")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_") and k not in SECRET_KEYS}
    base.update(SWITCHYARD_HOME=str(tmp_path / "home"), SWITCHYARD_BROKER_PORT=str(free_port()), COLUMNS="200")
    return base


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SWITCHYARD, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def refused(done: subprocess.CompletedProcess[str], message: str, code: int = 2) -> None:
    assert done.returncode == code, done.stdout + done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_environments_are_created_listed_and_required(env: dict[str, str], tmp_path: Path) -> None:
    refused(
        cli(env, "submit", "pr_review", "--env", "dev1", "--branch", "x"),
        "is not initialized; run: switchyard env init",
    )
    refused(cli(env, "env", "init", "--repo", str(tmp_path / "missing")), "missing' does not exist")
    sample = make_sample_repo(tmp_path / "sample")
    done = cli(env, "env", "init", "--repo", str(sample), "--envs", "dev1,dev2")
    assert done.returncode == 0, done.stderr
    listed = as_json(cli(env, "env", "list", "--json"))
    assert [(e["name"], e["branch"]) for e in listed] == [("dev1", "env/dev1"), ("dev2", "env/dev2")]
    refused(cli(env, "env", "init", "--repo", str(sample), "--envs", "dev9"), "unknown environments ['dev9']")


def test_bad_submissions_are_refused_with_the_reason(env: dict[str, str]) -> None:
    refused(cli(env, "submit", "pr_reviews", "--env", "dev1"), "kind: Input should be 'plan'")
    refused(cli(env, "submit", "pr_review", "--env", "dev9", "--branch", "x"), "unknown environment 'dev9'")
    refused(cli(env, "submit", "pr_review", "--env", "dev1"), "pr_review needs branch")
    refused(cli(env, "submit", "plan", "--env", "dev1", "--stage", "prod", "--goal", "x"), "unknown stage 'prod'")
    refused(cli(env, "tasks", "show", "no-such-task"), "task no-such-task does not exist")
    refused(
        cli(env, "submit", "pr_review", "--env", "dev1", "--branch", "x", "--avoid", "gemini"),
        "cannot avoid 'gemini': the fleet has no such provider; its providers are claude, codex, ollama",
    )
    assert as_json(cli(env, "tasks", "list", "--json")) == []


def test_a_submission_the_broker_cannot_take_is_recorded_and_said_so(env: dict[str, str], tmp_path: Path) -> None:
    """The broker is down: exit 3, and the message says the task is recorded (queued, its message owed in the
    outbox) and will be sent when the broker is back; it is not closed as rejected."""
    sample = make_sample_repo(tmp_path / "sample")
    assert cli(env, "env", "init", "--repo", str(sample), "--envs", "dev1").returncode == 0
    done = cli(env, "submit", "pr_review", "--env", "dev1", "--branch", "feature/sample-1")
    refused(done, "is recorded (queued) but the broker did not take its message", 3)
    assert "Do not submit it again" in done.stderr
    (task,) = as_json(cli(env, "tasks", "list", "--json"))
    assert task["status"] == "queued" and task["id"] in done.stderr


def test_a_bad_fleet_file_is_named_with_its_line(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "fleet.toml"
    bad.write_text((REPO / "switchyard.toml").read_text().replace("sessions = 5", "sessions = -1", 1))
    env["SWITCHYARD_FLEET_FILE"] = str(bad)
    refused(cli(env, "validate"), f"{bad}:")
    refused(cli(env, "validate"), "sessions: Input should be greater than or equal to 1")


def test_status_and_health_report_a_stopped_fleet(env: dict[str, str]) -> None:
    assert cli(env, "db", "upgrade").returncode == 0
    status = as_json(cli(env, "status", "--json"))
    assert {g["name"]: g["live_workers"] for g in status["groups"]} == {
        "high_level": 0,
        "dev_workers": 0,
        "pr_review": 0,
        "pr_impl": 0,
        "pr_integ": 0,
    }
    assert [e["environment"] for e in status["environments"]][:3] == ["dev1", "dev1", "dev1"]
    health = cli(env, "health", "--json")
    assert health.returncode == 1
    checks = {c["name"]: c["ok"] for c in json.loads(health.stdout)["checks"]}
    assert checks == {"database": True, "broker connection": False}


def test_settings_errors_are_one_line(env: dict[str, str]) -> None:
    env["SWITCHYARD_PROFILE"] = "prod"
    refused(cli(env, "validate"), "SWITCHYARD_PROFILE")


def test_usage_mistakes_are_one_message_not_a_traceback(env: dict[str, str]) -> None:
    for args in (("bogus",), ("tasks", "show"), ("submit", "pr_review", "--branch", "x")):
        done = cli(env, *args)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and "Try 'switchyard" in done.stderr


def test_filters_and_short_ids(env: dict[str, str], tmp_path: Path) -> None:
    refused(cli(env, "tasks", "list", "--status", "bogus"), "--status 'bogus' is not one of: queued")
    refused(cli(env, "tasks", "list", "--kind", "pr_revew"), "--kind 'pr_revew' is not one of")
    sample = make_sample_repo(tmp_path / "sample")
    assert cli(env, "env", "init", "--repo", str(sample), "--envs", "dev1").returncode == 0
    refused(cli(env, "submit", "pr_integ", "--env", "dev1", "--branch", "feature/nope"), "does not exist in the repo")
    cli(env, "submit", "pr_integ", "--env", "dev1", "--branch", "feature/sample-1")  # broker down: recorded
    (task,) = as_json(cli(env, "tasks", "list", "--json"))
    shown = as_json(cli(env, "tasks", "show", task["id"][:8], "--json"))
    assert shown["id"] == task["id"]


def test_up_refuses_a_data_directory_whose_whole_fleet_runs_with_exit_code_1(
    env: dict[str, str], tmp_path: Path, processes: Processes
) -> None:
    """Refused, not bad input: a pidfile of a live process for every service says this fleet runs."""
    sleeper = processes.spawn(["sleep", "60"])
    run_dir = tmp_path / "home" / "development" / "run"
    groups = ("high_level", "dev_workers", "pr_review", "pr_impl", "pr_integ")
    for name in ("api", "beat", "flower", *(f"worker-{group}" for group in groups)):
        pidfiles.write_pidfile(run_dir, name, sleeper.pid, "sleep")
    # An external broker that does not answer: if the refusal were lost, `up` would stop with exit 3 at once.
    env["SWITCHYARD_BROKER_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    refused(cli(env, "up", "--detach"), f"FleetAlreadyRunning: a fleet is already running for {tmp_path.resolve()}", 1)
    refused(cli(env, "restart", "no_such_group"), "no session group 'no_such_group'", 2)
    refused(cli(env, "up", "--ready-timeout", "0"), "--ready-timeout", 2)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InputError("x"), 2),
        (NotFound("x"), 2),
        (ConfigError("x"), 2),
        (ServiceUnavailable("x"), 3),
        (LedgerUnavailable("x"), 3),
        (StateUnavailable("x"), 3),
        (FleetAlreadyRunning("x"), 1),
        (GitError("x"), 1),
    ],
)
def test_each_error_class_has_its_exit_code(error: SwitchyardError, code: int) -> None:
    assert exit_code_for(error) == code


def test_version_prints_the_installed_version(env: dict[str, str]) -> None:
    done = cli(env, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"switchyard {version('switchyard')}"


def test_a_single_word_to_env_feature_gets_an_example_that_keeps_it(env: dict[str, str]) -> None:
    refused(cli(env, "env", "feature", "dev2"), "e.g. switchyard env feature dev2 login-form")
    refused(cli(env, "env", "feature", "login"), "e.g. switchyard env feature dev1 login\n")
