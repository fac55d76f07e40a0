"""Settings: defaults on loopback, profiles with their own data directory, clear errors, no placeholder keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.errors import ConfigError
from switchyard.settings import Settings, load_settings


def test_defaults_use_embedded_broker_and_sqlite(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert settings.embedded_broker
    password = settings.broker_password
    assert settings.effective_broker_url == f"redis://:{password}@127.0.0.1:6399/0"
    assert settings.effective_state_url == settings.effective_broker_url  # breakers share the broker
    assert settings.data_dir == (tmp_path / "development").resolve()
    assert settings.effective_database_url == f"sqlite:///{settings.data_dir / 'switchyard.db'}"


def test_profile_moves_the_data_directory(tmp_path: Path) -> None:
    assert Settings(home=tmp_path, profile="staging").data_dir.name == "staging"


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SWITCHYARD_HOME", str(tmp_path))
    monkeypatch.setenv("SWITCHYARD_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-real")
    settings = load_settings()
    assert not settings.embedded_broker
    assert settings.anthropic_api_key is not None
    assert "sk-ant-real" not in repr(settings)


def test_bad_values_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_PROFILE", "prod")
    with pytest.raises(ConfigError, match="SWITCHYARD_PROFILE"):
        load_settings()


def test_bad_broker_scheme() -> None:
    with pytest.raises(ConfigError, match="SWITCHYARD_BROKER_URL must start with"):
        load_settings(broker_url="http://localhost")


def test_placeholder_secret_refused_outside_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "changeme")
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings(profile="production")
    assert load_settings(profile="development").openai_api_key is not None


def test_a_variable_set_but_empty_counts_as_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`SWITCHYARD_HOME=` once put the data in ./development/; an empty key once counted as a configured one."""
    monkeypatch.chdir(tmp_path)
    for name in ("SWITCHYARD_HOME", "SWITCHYARD_WORKSPACE", "SWITCHYARD_BROKER_PORT", "ANTHROPIC_API_KEY"):
        monkeypatch.setenv(name, "")
    settings = load_settings()
    assert settings.data_dir == (tmp_path / ".switchyard" / "development").resolve()
    assert settings.workspace is None and settings.broker_port == 6399
    assert settings.anthropic_api_key is None


def test_ready_timeout_is_adaptive_unless_set_and_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().ready_timeout is None  # unset: `up` adapts its wait (workers/readiness.py)
    monkeypatch.setenv("SWITCHYARD_READY_TIMEOUT", "240")
    assert load_settings().ready_timeout == 240.0
    monkeypatch.setenv("SWITCHYARD_READY_TIMEOUT", "0")
    with pytest.raises(ConfigError, match="SWITCHYARD_READY_TIMEOUT"):
        load_settings()


def test_the_demo_profile_keeps_its_data_apart(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What a user exported for their own fleet (database, broker, state, workspace) is never the demo's."""
    monkeypatch.setenv("SWITCHYARD_HOME", str(tmp_path))
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", "postgresql+psycopg://u@db/users")
    monkeypatch.setenv("SWITCHYARD_BROKER_URL", "redis://broker:6379/0")
    monkeypatch.setenv("SWITCHYARD_WORKSPACE", str(tmp_path / "mine"))
    demo = load_settings(profile="demo")
    assert demo.data_dir == (tmp_path / "demo").resolve()
    assert demo.effective_database_url == f"sqlite:///{tmp_path.resolve() / 'demo' / 'switchyard.db'}"
    assert demo.broker_url is None and demo.workspace_dir == (tmp_path / "demo" / "workspace").resolve()
    assert demo.fleet_profile == "development"  # the fleet file's overlay it reads
    users = load_settings()
    assert users.effective_database_url == "postgresql+psycopg://u@db/users" and users.fleet_profile == "development"


def test_a_demo_child_finds_the_demos_broker(tmp_path: Path) -> None:
    """`up` passes its children the settings in force; a child of the demo profile drops the URLs it is given
    (as the demo does) and must still find the demo's embedded broker, from its port."""
    from workers.services import child_env

    parent = load_settings(profile="demo", home=tmp_path, broker_port=45499)
    env = child_env(parent, simulate=True, base_env={})
    child_values = {key.removeprefix("SWITCHYARD_").lower(): value for key, value in env.items()}
    child = Settings(**{k: v for k, v in child_values.items() if k in Settings.model_fields})  # type: ignore[arg-type]
    assert child.effective_broker_url == parent.effective_broker_url  # with the broker's password (private.py)
    assert parent.effective_broker_url.startswith("redis://:") and parent.effective_broker_url.endswith(
        "@127.0.0.1:45499/0"
    )
    assert child.effective_database_url == parent.effective_database_url
