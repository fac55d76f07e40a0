"""Profiles that mean something: production's refusals, staging's thresholds and log level, `config show`'s
sources and masking, `seed` idempotent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import flushed_redis

from cli import main
from switchyard.private import stored_secret
from switchyard.settings import HEALTH_THRESHOLDS, load_settings
from workers import services

SWITCHYARD = str(Path(sys.executable).parent / "switchyard")
EVERYWHERE = "0.0.0.0"  # noqa: S104 - a bind address the settings must refuse, never bound here
KEY = "sk-ant-profilestest-0123456789abcdefghij"
ALERT = "json://hooks.example.test/notify-secret-path"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("SWITCHYARD_") and not name.startswith("SWITCHYARD_TEST_"):
            monkeypatch.delenv(name)
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OLLAMA_HOST", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SWITCHYARD_HOME", str(tmp_path / "home"))
    return tmp_path


def test_production_refuses_in_a_process_that_does_not_start(clean_env: Path) -> None:
    """`up` in production with the API auth off: exit 2, one line naming the setting, nothing started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(SWITCHYARD_HOME=str(clean_env / "home"), SWITCHYARD_PROFILE="production", SWITCHYARD_API_AUTH="off")
    done = subprocess.run(
        [SWITCHYARD, "up", "--detach"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "SWITCHYARD_API_AUTH is off; the production profile requires it on" in line
    assert not (clean_env / "home" / "production" / "run").exists()  # no pidfile: nothing started


@pytest.mark.parametrize(
    ("variables", "args", "names"),
    [
        ({"SWITCHYARD_API_AUTH": "off"}, ["up"], "SWITCHYARD_API_AUTH"),
        ({"SWITCHYARD_API_AUTH": "off", "SWITCHYARD_HOST": EVERYWHERE}, ["up"], f"SWITCHYARD_HOST={EVERYWHERE}"),
        ({}, ["up", "--simulate"], "SWITCHYARD_PRODUCTION_SIMULATOR=true"),
        ({"SWITCHYARD_SIMULATE": "true"}, ["up"], "SWITCHYARD_PRODUCTION_SIMULATOR=true"),
        ({"ANTHROPIC_API_KEY": "changeme"}, ["up"], "ANTHROPIC_API_KEY is a placeholder"),
    ],
)
def test_each_production_refusal_names_its_setting(  # noqa: PLR0917 - pytest passes fixtures by position
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variables: dict[str, str],
    args: list[str],
    names: str,
) -> None:
    monkeypatch.setenv("SWITCHYARD_PROFILE", "production")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and names in err, err
    assert not (clean_env / "home" / "production" / "run").exists()


def test_production_allows_the_simulator_asked_for_by_name(clean_env: Path) -> None:
    settings = load_settings(profile="production", simulate=True, production_simulator=True)
    env = services.child_env(settings, simulate=True, base_env={})
    assert env["SWITCHYARD_PRODUCTION_SIMULATOR"] == "true"  # its children start too


def test_staging_binds_beyond_loopback_only_with_auth(clean_env: Path) -> None:
    assert load_settings(profile="staging", host=EVERYWHERE).api_auth_on  # auth on by default in staging
    with pytest.raises(Exception, match="SWITCHYARD_API_AUTH is off"):
        load_settings(profile="staging", host=EVERYWHERE, api_auth="off")
    assert not load_settings(profile="development", host=EVERYWHERE).api_auth_on  # development: today's behaviour


def test_staging_thresholds_are_twice_production_and_logs_verbose(clean_env: Path) -> None:
    staging, production = HEALTH_THRESHOLDS["staging"], HEALTH_THRESHOLDS["production"]
    assert staging.probe_timeout_s == 2 * production.probe_timeout_s
    assert staging.inspect_timeout_s == 2 * production.inspect_timeout_s
    assert staging.slow_ms == 2 * production.slow_ms
    assert HEALTH_THRESHOLDS["development"] == production
    settings = load_settings(profile="staging")
    assert settings.effective_log_level == "DEBUG"
    assert services.child_env(settings, simulate=False, base_env={})["SWITCHYARD_LOG_LEVEL"] == "DEBUG"
    assert load_settings(profile="staging", log_level="warning").effective_log_level == "WARNING"
    assert load_settings(profile="production").effective_log_level == "INFO"
    assert load_settings().effective_log_level == "INFO"


def test_config_show_generates_no_password(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run before the first `up` (as the README's team section does), `config show` writes no secret: `up` still
    finds Flower's password missing, generates it and prints it that once."""
    monkeypatch.setenv("SWITCHYARD_PROFILE", "staging")
    monkeypatch.setenv("SWITCHYARD_BROKER_PORT", "17298")
    assert main(["config", "show", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["settings"]}
    secrets = clean_env / "home" / "staging" / "secrets"
    assert not (secrets / "broker-password").exists() and not (secrets / "flower-password").exists()
    assert rows["effective_broker_url"] == {
        "name": "effective_broker_url",
        "value": "redis://:***@127.0.0.1:17298/0",
        "source": f"embedded broker; password generated by the first `switchyard up` into secrets file "
        f"{secrets / 'broker-password'}",
    }
    broker = stored_secret(secrets / "broker-password")
    assert main(["config", "show", "--json"]) == 0
    out = capsys.readouterr().out
    assert broker not in out
    rows = {r["name"]: r for r in json.loads(out)["settings"]}
    assert rows["effective_broker_url"]["value"] == "redis://:***@127.0.0.1:17298/0"
    assert rows["effective_broker_url"]["source"] == (
        f"embedded broker; password from secrets file {secrets / 'broker-password'}"
    )


def test_config_show_says_where_each_value_came_from_and_masks_secrets(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHYARD_PROFILE", "staging")
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("SWITCHYARD_API_PORT", "17290")
    monkeypatch.setenv("SWITCHYARD_ALERT_URLS", ALERT)
    monkeypatch.setenv("SWITCHYARD_BROKER_URL", "redis://:brokerpass123@127.0.0.1:17299/3")
    assert main(["config", "show", "--json"]) == 0
    out = capsys.readouterr().out
    for secret in (KEY, "notify-secret-path", "brokerpass123"):
        assert secret not in out
    rows = {r["name"]: r for r in json.loads(out)["settings"]}
    assert rows["api_port"]["value"] == "17290"
    assert rows["api_port"]["source"] == "environment variable SWITCHYARD_API_PORT"
    assert rows["anthropic_api_key"]["value"] == "*** (set)"
    assert rows["anthropic_api_key"]["source"] == "environment variable ANTHROPIC_API_KEY"
    assert rows["alert_urls"]["value"] == "*** (set)"
    assert rows["flower_port"]["source"] == "default"
    assert rows["effective_broker_url"]["value"] == "redis://:***@127.0.0.1:17299/3"
    flower_file = clean_env / "home" / "staging" / "secrets" / "flower-password"
    # showing the settings generates no password: the first `up` does, and prints Flower's that once
    assert not flower_file.exists()
    assert rows["flower_login"] == {
        "name": "flower_login",
        "value": "switchyard / ***",
        "source": f"generated by the first `switchyard up` into secrets file {flower_file}",
    }
    password = stored_secret(flower_file)
    assert main(["config", "show", "--json"]) == 0
    out = capsys.readouterr().out
    assert password not in out
    rows = {r["name"]: r for r in json.loads(out)["settings"]}
    assert rows["flower_login"]["source"] == f"secrets file {flower_file}"
    assert rows["effective_log_level"] == {
        "name": "effective_log_level",
        "value": "DEBUG",
        "source": "default of profile 'staging'",
    }
    assert rows["api_auth_on"]["value"] == "true"
    assert rows["health_thresholds"]["value"] == "probe 2s, inspect 3s, slow 200ms"
    assert rows["budgets"]["source"].startswith("fleet file ")
    assert rows["budgets"]["value"] == "all * day $50, all * hour $10"


def test_seed_loads_environments_and_tasks_once(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHYARD_PROFILE", "staging")
    monkeypatch.setenv("SWITCHYARD_BROKER_URL", flushed_redis(13))  # messages wait there; no worker runs
    assert main(["seed", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["environments"] == ["dev1", "dev2", "dev3", "dev4", "dev5"]
    assert len(first["tasks_added"]) == 10 and first["tasks_already_there"] == 0
    assert main(["seed", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["tasks_added"] == [] and second["tasks_already_there"] == 10
    assert main(["tasks", "list", "--json", "--limit", "100"]) == 0
    listed = json.loads(capsys.readouterr().out)
    tasks = listed["tasks"] if isinstance(listed, dict) else listed
    assert sorted(t["id"] for t in tasks) == sorted(first["tasks_added"])


def test_seed_is_refused_in_production_unless_forced(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHYARD_PROFILE", "production")
    assert main(["seed"]) == 2
    assert "refused in production (pass --force to seed)" in capsys.readouterr().err
