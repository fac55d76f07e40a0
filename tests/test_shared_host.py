"""On a shared host: the embedded broker asks for a password, Flower for a login, and the data directory is
the user's alone (directories 0700, files 0600). Real valkey, real Flower, a real `switchyard up`."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from conftest import free_port, port_open, stop_process_group

from environments.sample import make_sample_repo
from switchyard.errors import ConfigError
from switchyard.fleet import load_fleet
from switchyard.private import masked_url, private_dir, stored_secret, write_private
from switchyard.settings import DEFAULT_FLEET_FILE, Settings, load_settings
from workers import broker, launcher
from workers.readiness import ReadyPolicy

SWITCHYARD = str(Path(sys.executable).parent / "switchyard")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the private files and secrets ----------------------------------------------------------------------


def test_a_stored_secret_is_generated_once_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secrets" / "broker-password"
    first = stored_secret(path)
    assert len(first) >= 32 and mode(path) == 0o600
    assert mode(path.parent) == 0o700 and mode(tmp_path / "data") == 0o700
    path.chmod(0o644)  # loosened by hand: made private again when read
    assert stored_secret(path) == first and mode(path) == 0o600


def test_a_spoiled_secret_file_says_how_to_fix_it_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "broker-password"
    path.write_text("short word\n")
    with pytest.raises(ConfigError, match="delete it and Switchyard generates a new one") as caught:
        stored_secret(path)
    assert "short word" not in str(caught.value)


def test_private_writes_and_directories(tmp_path: Path) -> None:
    open_dir = tmp_path / "loose"
    open_dir.mkdir(mode=0o755)
    private_dir(open_dir)
    assert mode(open_dir) == 0o700
    written = write_private(open_dir / "deep" / "valkey.conf", "requirepass x\n")
    assert mode(written) == 0o600 and mode(written.parent) == 0o700
    assert written.read_text() == "requirepass x\n"


def test_masked_url_hides_only_the_password() -> None:
    assert masked_url("redis://:s3cret-Token@127.0.0.1:6399/0") == "redis://:***@127.0.0.1:6399/0"
    assert masked_url("amqp://guest:pw@rabbit:5672//") == "amqp://guest:***@rabbit:5672//"
    assert masked_url("redis://127.0.0.1:6399/0") == "redis://127.0.0.1:6399/0"


def test_the_broker_url_carries_a_password_that_survives_a_restart(tmp_path: Path) -> None:
    first = Settings(home=tmp_path)
    password = first.broker_password
    assert mode(first.broker_password_file) == 0o600 and mode(first.data_dir) == 0o700
    again = Settings(home=tmp_path)  # a later process of the same data directory
    assert again.effective_broker_url == f"redis://:{password}@127.0.0.1:6399/0" == first.effective_broker_url
    assert password not in repr(again) and password not in masked_url(again.effective_broker_url)
    assert Settings(home=tmp_path, profile="staging").broker_password != password  # one per data directory
    named = Settings(home=tmp_path, broker_url="redis://broker.example:6379/0")
    assert named.effective_broker_url == "redis://broker.example:6379/0"


def test_flower_credentials_by_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(home=tmp_path).flower_credentials is None
    staging = Settings(home=tmp_path, profile="staging")
    assert staging.flower_credentials is not None
    user, password = staging.flower_credentials
    assert user == "switchyard" and mode(staging.flower_password_file) == 0o600
    assert Settings(home=tmp_path, profile="staging").flower_credentials == (user, password)  # reused
    monkeypatch.setenv("SWITCHYARD_FLOWER_USER", "ops")
    monkeypatch.setenv("SWITCHYARD_FLOWER_PASSWORD", "correct-horse-battery")
    assert load_settings(home=tmp_path).flower_credentials == ("ops", "correct-horse-battery")
    monkeypatch.setenv("SWITCHYARD_FLOWER_PASSWORD", "with,comma")
    with pytest.raises(ConfigError, match="SWITCHYARD_FLOWER_PASSWORD must not contain ','") as caught:
        load_settings(home=tmp_path)
    assert "with,comma" not in str(caught.value)
    monkeypatch.setenv("SWITCHYARD_FLOWER_PASSWORD", "changeme")
    with pytest.raises(ConfigError, match="FLOWER_PASSWORD is a placeholder"):
        load_settings(home=tmp_path, profile="production")


# --- the embedded broker refuses a client without the password ------------------------------------------


@pytest.fixture
def broker_settings(tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(home=tmp_path, broker_port=free_port())
    yield settings
    if port_open("127.0.0.1", settings.broker_port):
        with redis.Redis.from_url(broker.local_url(settings), socket_timeout=5) as client:
            client.shutdown(nosave=True)


def raw_reply(port: int, command: bytes) -> bytes:
    """The server's first reply line to ``command``, sent as a plain client with no AUTH would."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(command)
        return sock.recv(4096)


@pytest.mark.integration
def test_the_embedded_broker_refuses_a_client_without_the_password(broker_settings: Settings) -> None:
    settings = broker_settings
    process = broker.start_broker(settings)
    try:
        assert raw_reply(settings.broker_port, b"SET breaker:claude closed\r\n").startswith(b"-NOAUTH")
        anonymous = redis.Redis(host="127.0.0.1", port=settings.broker_port, socket_timeout=5)
        with anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.set("breaker:claude", "closed")
        wrong = redis.Redis(host="127.0.0.1", port=settings.broker_port, password="guess", socket_timeout=5)
        with wrong, pytest.raises(redis.AuthenticationError):
            wrong.ping()
        with redis.Redis.from_url(settings.effective_broker_url, socket_timeout=5) as ours:
            assert ours.ping() is True
        paths = broker.broker_paths(settings)
        assert mode(paths.config) == 0o600 and mode(paths.dir) == 0o700
        assert f"requirepass {settings.broker_password}" in paths.config.read_text()
        for path in paths.dir.rglob("*"):  # valkey's own files: made under the launcher's umask
            assert mode(path) == (0o700 if path.is_dir() else 0o600), path
            if path.is_file() and path != paths.config:
                assert settings.broker_password not in path.read_text(errors="replace"), path
    finally:
        broker.shutdown(settings, process)


# --- Flower answers its API only with the login ---------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_flower_outside_development_wants_its_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWER_UNAUTHENTICATED_API", "true")  # left in the shell: must not reach Flower
    settings = Settings(
        home=tmp_path,
        profile="staging",
        broker_port=free_port(),
        flower_port=free_port(),
        database_url=f"sqlite:///{tmp_path / 'flower.db'}",
    )
    fleet = load_fleet(DEFAULT_FLEET_FILE, "staging")
    policy = ReadyPolicy()  # adaptive: stretched by the machine's load
    running = launcher.up(settings, fleet, simulate=False, services={"broker", "flower"}, policy=policy, on_event=print)
    try:
        assert settings.flower_credentials is not None
        user, password = settings.flower_credentials
        base = f"http://127.0.0.1:{settings.flower_port}"
        assert httpx.get(f"{base}/api/workers", timeout=30).status_code == 401
        assert httpx.get(f"{base}/api/workers", auth=(user, "wrong"), timeout=30).status_code == 401
        assert httpx.post(f"{base}/api/task/revoke/some-task-id", timeout=30).status_code == 401
        assert httpx.get(f"{base}/api/workers", auth=(user, password), timeout=30).status_code == 200
        assert httpx.get(f"{base}/", auth=(user, password), timeout=30).status_code == 200
        flower_log = (settings.log_dir / "flower.log").read_text()
        assert password not in flower_log and settings.broker_password not in flower_log
    finally:
        launcher.down(settings, on_event=print)
    assert all(child.process.poll() is not None for child in running)


# --- a whole fleet: modes, the password nowhere it may not be -------------------------------------------


def private_everywhere(data_dir: Path) -> list[str]:
    """Paths under ``data_dir`` (the git workspace aside) that are not 0700 dirs or 0600 files."""
    loose = []
    for path in [data_dir, *data_dir.rglob("*")]:
        if "workspace" in path.relative_to(data_dir).parts or path.is_symlink():
            continue
        wanted = 0o700 if path.is_dir() else 0o600
        if mode(path) != wanted:
            loose.append(f"{path.relative_to(data_dir)}: {oct(mode(path))}")
    return loose


@pytest.mark.e2e
@pytest.mark.timeout(1200)  # a fleet start and a task's pipeline on a machine at load 15
def test_a_fleet_keeps_its_files_private_and_its_broker_password_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "FLOWER_"))}
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OLLAMA_HOST", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"):
        env.pop(key, None)
    ports = {name: free_port() for name in ("BROKER", "API", "FLOWER", "SIMULATOR")}
    env.update({f"SWITCHYARD_{name}_PORT": str(port) for name, port in ports.items()})
    env.update(SWITCHYARD_HOME=str(tmp_path / "home"), COLUMNS="200")
    data_dir = (tmp_path / "home" / "development").resolve()
    run_dir = data_dir / "run"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SWITCHYARD, *args], env=env, capture_output=True, text=True, timeout=900, check=False)

    sample = make_sample_repo(tmp_path / "sample")
    assert cli("env", "init", "--repo", str(sample), "--envs", "dev1").returncode == 0
    outputs: list[str] = []
    password = ""
    try:
        started = cli("up", "--simulate", "--detach")
        outputs.append(started.stdout + started.stderr)
        assert started.returncode == 0, outputs[-1]
        done = cli("submit", "pr_review", "--env", "dev1", "--branch", "feature/sample-1", "--wait", "--timeout", "600")
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == 0, outputs[-1]  # the fleet works through the password-protected broker

        password = (data_dir / "secrets" / "broker-password").read_text().strip()
        anonymous = redis.Redis(host="127.0.0.1", port=ports["BROKER"], socket_timeout=5)
        with anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.keys("*")
        for args in (("status",), ("health",), ("health", "--json"), ("validate",)):
            shown = cli(*args)
            outputs.append(shown.stdout + shown.stderr)
            assert shown.returncode == 0, outputs[-1]

        assert private_everywhere(data_dir) == []
        assert {p.name for p in data_dir.glob("switchyard.db*")} >= {"switchyard.db", "switchyard.db-wal"}
        assert len(list(run_dir.glob("*.pid"))) == 10
        written = [p for p in data_dir.rglob("*") if p.is_file() and "workspace" not in p.parts]
        allowed = {
            data_dir / "secrets" / "broker-password",
            broker.broker_paths(Settings(home=tmp_path / "home")).config,
        }
        assert [p for p in written if p not in allowed and password in p.read_text(errors="replace")] == []
        assert not any(password in out for out in outputs)
    finally:
        pids = [json.loads(p.read_text())["pid"] for p in run_dir.glob("*.pid")]
        stopped = cli("down")
        for pid in pids:
            stop_process_group(pid)
    assert stopped.returncode == 0, stopped.stderr
    assert password and password not in stopped.stdout + stopped.stderr
    assert not list(run_dir.glob("*.pid"))
    assert private_everywhere(data_dir) == []


def test_up_shows_a_generated_flower_password_only_the_time_it_is_made(tmp_path: Path) -> None:
    from cli.ops import flower_login

    staging = Settings(home=tmp_path, profile="staging")
    first = flower_login(staging, had_password_file=staging.flower_password_file.exists())
    password = staging.flower_password_file.read_text().strip()
    assert password in first and str(staging.flower_password_file) in first
    later = Settings(home=tmp_path, profile="staging")
    shown = flower_login(later, had_password_file=later.flower_password_file.exists())
    assert password not in shown and str(later.flower_password_file) in shown
    assert "no login" in flower_login(Settings(home=tmp_path), had_password_file=False)
