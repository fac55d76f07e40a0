"""The launcher with real processes: embedded broker, five `celery worker` pools, Flower, the API.

Each test stops what it started: `up` returns the children, and `down` (or the fixture's teardown) stops
them by the pids in their pidfiles, then the test checks the pids are gone.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port

from switchyard.errors import ConfigError, ServiceUnavailable
from switchyard.fleet import Fleet, load_fleet
from switchyard.settings import DEFAULT_FLEET_FILE, Settings
from workers import health, launcher, pidfiles, services
from workers.launcher import FleetAlreadyRunning, RunningService

GROUPS = ("high_level", "dev_workers", "pr_review", "pr_impl", "pr_integ")


def make_settings(home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": home,
        "broker_url": None,
        "database_url": None,
        "broker_port": free_port(),
        "flower_port": free_port(),
        "api_port": free_port(),
        "simulator_port": free_port(),
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return load_fleet(DEFAULT_FLEET_FILE)


def assert_all_gone(running: list[RunningService]) -> None:
    for child in running:
        child.process.poll()
        assert not pidfiles.process_group_alive(child.pid), f"{child.name} (pid {child.pid}) still runs"


Up = tuple[Settings, list[RunningService]]


class Recorder(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


# --- pure parts -----------------------------------------------------------------------------------------


def test_specs_bind_each_group_to_its_queue_with_one_slot_per_session(tmp_path: Path, fleet: Fleet) -> None:
    specs = services.build_specs(make_settings(tmp_path), fleet, simulate=False, base_env={})
    workers = {s.name: s for s in specs if s.name.startswith("worker-")}
    assert set(workers) == {f"worker-{g}" for g in GROUPS}
    for group in fleet.groups:
        argv = list(workers[f"worker-{group.name}"].argv)
        assert argv[argv.index("-Q") + 1] == group.queue
        assert argv[argv.index("-c") + 1] == str(group.sessions)
        assert argv[argv.index("-n") + 1] == f"{group.name}@%h"
    assert specs[0].name == "broker"
    assert "simulator" not in {s.name for s in specs}


def test_secrets_travel_in_the_environment_only(tmp_path: Path, fleet: Fleet) -> None:
    settings = make_settings(tmp_path, anthropic_api_key="sk-ant-test-secret")
    specs = services.build_specs(settings, fleet, simulate=True, base_env={"PATH": "/bin", "SWITCHYARD_X": "1"})
    for spec in specs:
        assert spec.env["ANTHROPIC_API_KEY"] == "sk-ant-test-secret"
        assert "sk-ant-test-secret" not in " ".join(spec.argv)
        assert "sk-ant-test-secret" not in repr(spec)
        assert spec.env["PATH"] == "/bin" and "SWITCHYARD_X" not in spec.env
        assert spec.env["SWITCHYARD_BROKER_URL"] == settings.effective_broker_url
        assert spec.env["SWITCHYARD_SIMULATE"] == "true"


def test_provider_variables_come_from_the_settings_alone(tmp_path: Path, fleet: Fleet) -> None:
    """A key left in the parent's environment does not reach workers whose settings have none (the demo)."""
    inherited = {"PATH": "/bin", "OPENAI_API_KEY": "sk-parent", "OLLAMA_HOST": "http://gpu:11434"}
    keyless = make_settings(tmp_path, openai_api_key=None, ollama_host=None)
    env = services.child_env(keyless, simulate=True, base_env=inherited)
    assert "OPENAI_API_KEY" not in env and "OLLAMA_HOST" not in env
    with_key = services.child_env(make_settings(tmp_path, openai_api_key="sk-own"), simulate=False, base_env=inherited)
    assert with_key["OPENAI_API_KEY"] == "sk-own"


def test_flower_api_is_opened_only_on_loopback(tmp_path: Path, fleet: Fleet) -> None:
    def flower(host: str) -> services.ServiceSpec:
        specs = services.build_specs(make_settings(tmp_path, host=host), fleet, simulate=False, base_env={})
        return next(s for s in specs if s.name == "flower")

    assert flower("127.0.0.1").env["FLOWER_UNAUTHENTICATED_API"] == "true"
    assert "FLOWER_UNAUTHENTICATED_API" not in flower("10.1.2.3").env


def test_select_knows_workers_and_refuses_unknown_names(tmp_path: Path, fleet: Fleet) -> None:
    specs = services.build_specs(make_settings(tmp_path), fleet, simulate=False, base_env={})
    assert len(services.select(specs, {"workers"})) == len(GROUPS)
    with pytest.raises(Exception, match="unknown service"):
        services.select(specs, {"wrokers"})


def test_pidfile_of_a_dead_or_reused_pid_is_stale(tmp_path: Path) -> None:
    pidfiles.write_pidfile(tmp_path, "mine", os.getpid(), "pytest")
    pidfiles.write_pidfile(tmp_path, "reused", os.getpid(), "celery -A tasks.app worker")
    pidfiles.write_pidfile(tmp_path, "gone", 2**22 + 1, "anything")  # above the kernel's pid_max default
    assert pidfiles.alive(os.getpid(), "pytest") or pidfiles.alive(os.getpid(), sys.executable)
    removed = {record.name for record in pidfiles.clean_stale(tmp_path)}
    assert removed == {"reused", "gone"}
    assert pidfiles.pidfile_names(tmp_path) == ["mine"]


def test_a_taken_port_names_the_setting_that_moves_it(tmp_path: Path, fleet: Fleet) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        settings = make_settings(tmp_path, flower_port=squatter.getsockname()[1])
        with pytest.raises(ConfigError, match="SWITCHYARD_FLOWER_PORT"):
            launcher.up(settings, fleet, simulate=False, services={"flower"}, on_event=Recorder())


# --- the whole local fleet ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def running_fleet(tmp_path_factory: pytest.TempPathFactory, fleet: Fleet) -> Iterator[Up]:
    settings = make_settings(tmp_path_factory.mktemp("fleet"))
    running = launcher.up(
        settings,
        fleet,
        simulate=False,
        services={"broker", "workers", "flower"},
        on_event=Recorder(),
        timeout_s=60,
    )
    try:
        yield settings, running
    finally:
        launcher.down(settings, on_event=Recorder())
        assert_all_gone(running)


@pytest.mark.integration
def test_one_live_worker_per_group(running_fleet: Up, fleet: Fleet) -> None:
    settings, _ = running_fleet
    app = health.control_app(settings, fleet)
    try:
        by_group = health.workers_by_group(app, fleet, timeout=2.0)
    finally:
        app.close()
    host = socket.gethostname()
    assert by_group == {group: [f"{group}@{host}"] for group in GROUPS}
    assert health.queue_depths(settings.effective_broker_url, fleet) == dict.fromkeys(GROUPS, 0)
    assert health.broker_ok(settings.effective_broker_url) is None


@pytest.mark.integration
def test_flower_api_lists_the_five_workers(running_fleet: Up) -> None:
    settings, _ = running_fleet
    answer = httpx.get(f"http://127.0.0.1:{settings.flower_port}/api/workers", params={"refresh": 1}, timeout=15)
    assert answer.status_code == 200
    host = socket.gethostname()
    assert set(answer.json()) == {f"{group}@{host}" for group in GROUPS}


@pytest.mark.integration
def test_a_second_up_is_refused(running_fleet: Up, fleet: Fleet) -> None:
    settings, _ = running_fleet
    with pytest.raises(FleetAlreadyRunning, match="switchyard down"):
        launcher.up(settings, fleet, simulate=False, on_event=Recorder())


@pytest.mark.integration
def test_a_killed_child_is_noticed_and_its_pidfile_is_stale(
    running_fleet: Up,
) -> None:
    """Runs last in this module: it kills a worker, then `down` stops the rest."""
    settings, running = running_fleet
    stop = threading.Event()
    stop.set()
    assert launcher.supervise(running, stop, poll_s=0.01) is None  # Ctrl-C: nothing died

    victim = next(child for child in running if child.name == "worker-pr_integ")
    os.kill(victim.pid, signal.SIGKILL)
    victim.process.wait(timeout=10)

    died = launcher.supervise(running, threading.Event(), poll_s=0.05)
    assert died is not None and "worker-pr_integ" in died

    states = {state.name: state for state in launcher.fleet_status(settings)}
    assert states["worker-pr_integ"].stale and not states["worker-pr_integ"].alive
    assert states["broker"].alive and states["worker-high_level"].alive

    events = Recorder()
    stopped = launcher.down(settings, on_event=events)
    assert any("stale" in event and "worker-pr_integ" in event for event in events)
    assert "worker-pr_integ" not in stopped
    assert stopped[-1] == "broker" and stopped[0].startswith("worker-")
    assert pidfiles.pidfile_names(settings.run_dir) == []
    assert_all_gone(running)
    after = launcher.supervise(running, threading.Event(), poll_s=0.01)
    assert after is not None and "stopped by `switchyard down`" in after


# --- other shapes -------------------------------------------------------------------------------------


@pytest.mark.integration
def test_worker_on_the_machines_redis(tmp_path: Path, fleet: Fleet, redis_url: str) -> None:
    settings = make_settings(tmp_path, broker_url=redis_url)
    running = launcher.up(settings, fleet, simulate=False, services={"worker-pr_review"}, on_event=Recorder())
    try:
        assert [child.name for child in running] == ["worker-pr_review"]
        app = health.control_app(settings, fleet)
        try:
            by_group = health.workers_by_group(app, fleet, timeout=2.0)
            app.send_task("switchyard.plan", args=["not-a-task-id"])  # no high_level worker: it waits
        finally:
            app.close()
        assert by_group["pr_review"] == [f"pr_review@{socket.gethostname()}"]
        assert by_group["high_level"] == []
        assert health.queue_depths(redis_url, fleet)["high_level"] == 1
    finally:
        assert launcher.down(settings, on_event=Recorder()) == ["worker-pr_review"]
    assert_all_gone(running)


@pytest.mark.integration
def test_a_service_that_fails_to_start_stops_the_others(tmp_path: Path, fleet: Fleet) -> None:
    settings = make_settings(tmp_path, fleet_file=tmp_path / "missing.toml")  # the worker cannot load it
    events = Recorder()
    with pytest.raises(ServiceUnavailable) as info:
        launcher.up(settings, fleet, simulate=False, services={"broker", "worker-pr_impl"}, on_event=events)
    message = str(info.value)
    assert "worker-pr_impl exited" in message and "missing.toml" in message  # the log's tail says why
    assert pidfiles.pidfile_names(settings.run_dir) == []
    broker_pid = int(events[0].rsplit("pid ", 1)[1].rstrip(")"))
    assert not pidfiles.process_group_alive(broker_pid)


@pytest.mark.integration
def test_simulator_and_api_start_and_answer(tmp_path: Path, fleet: Fleet) -> None:
    settings = make_settings(tmp_path)
    running = launcher.up(settings, fleet, simulate=True, services={"broker", "simulator", "api"}, on_event=Recorder())
    try:
        assert httpx.get(f"{settings.effective_simulator_url}/_sim/health", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{settings.api_port}/api/multi-env/health", timeout=10).status_code < 500
    finally:
        launcher.down(settings, on_event=Recorder())
    assert_all_gone(running)
