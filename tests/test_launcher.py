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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port

from celeryconfig import MAINTENANCE_QUEUE
from switchyard.errors import ConfigError, InputError, ServiceUnavailable
from switchyard.fleet import Fleet, load_fleet
from switchyard.settings import DEFAULT_FLEET_FILE, Settings
from workers import health, launcher, pidfiles, probes, restart, services, supervise
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
        assert argv[argv.index("-Q") + 1] == f"{group.queue},{MAINTENANCE_QUEUE}"  # every group runs the upkeep
        assert argv[argv.index("-c") + 1] == str(group.sessions)
        assert argv[argv.index("-n") + 1] == f"{group.name}@%h"
    assert specs[0].name == "broker"
    assert "simulator" not in {s.name for s in specs}
    flower = next(s for s in specs if s.name == "flower")  # its history is kept in the data directory
    db = services.flower_db(make_settings(tmp_path))
    assert "--persistent=True" in flower.argv and f"--db={db}" in flower.argv


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


def test_flower_api_is_opened_only_in_development_on_loopback(tmp_path: Path, fleet: Fleet) -> None:
    def flower(host: str, **overrides: object) -> services.ServiceSpec:
        settings = make_settings(tmp_path, host=host, **overrides)
        specs = services.build_specs(settings, fleet, simulate=False, base_env={"FLOWER_UNAUTHENTICATED_API": "true"})
        return next(s for s in specs if s.name == "flower")

    assert flower("127.0.0.1").env["FLOWER_UNAUTHENTICATED_API"] == "true"
    assert "FLOWER_BASIC_AUTH" not in flower("127.0.0.1").env
    assert "FLOWER_BASIC_AUTH" not in flower("10.1.2.3", profile="development").env
    for spec in (flower("127.0.0.1", profile="staging"), flower("127.0.0.1", flower_password="pick-a-long-one")):
        assert "FLOWER_UNAUTHENTICATED_API" not in spec.env  # not even inherited from the parent
        user, password = spec.env["FLOWER_BASIC_AUTH"].split(":", 1)
        assert user == "switchyard" and password
        assert password not in " ".join(spec.argv) and password not in repr(spec)


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
def test_a_second_up_of_what_runs_is_refused(running_fleet: Up, fleet: Fleet) -> None:
    settings, _ = running_fleet
    with pytest.raises(FleetAlreadyRunning, match="switchyard restart GROUP"):
        launcher.up(settings, fleet, simulate=False, services={"broker", "workers", "flower"}, on_event=Recorder())


def live_pids(settings: Settings) -> dict[str, int]:
    return {state.name: state.pid for state in launcher.fleet_status(settings) if state.alive}


def node(group: str) -> str:
    return f"{group}@{socket.gethostname()}"


@pytest.mark.integration
def test_readiness_is_a_ping_addressed_to_the_workers_node(running_fleet: Up, fleet: Fleet) -> None:
    """The same running worker is ready under its own node name and not under another: the log is not asked."""
    settings, running = running_fleet
    spec = next(child.spec for child in running if child.name == "worker-pr_review")
    impostor = services.ServiceSpec(
        name="impostor", argv=spec.argv, env={}, ready=services.CeleryReady(node("nobody")), match="x",
        log_file=spec.log_file, stop_rank=0,
    )  # fmt: skip
    app = health.control_app(settings, fleet)
    try:
        ping = probes.Pinger(app, window_s=2.0, max_s=8.0)
        assert probes.ready_services([spec, impostor], ping) == ["worker-pr_review"]
        assert ping.window_s == 4.0  # a node missed the round: the next window is wider
    finally:
        app.close()


@pytest.mark.integration
def test_a_worker_that_answers_late_is_seen_once_the_window_widens(running_fleet: Up, fleet: Fleet) -> None:
    """A stopped (SIGSTOP) worker misses a round; continued, it answers a later one: late replies do not wedge it."""
    settings, running = running_fleet
    worker = next(child for child in running if child.name == "worker-high_level")
    app = health.control_app(settings, fleet)
    try:
        ping = probes.Pinger(app, window_s=0.5, max_s=4.0)
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            assert ping([node("high_level")]) == set()
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        assert ping.window_s == 1.0
        deadline = time.monotonic() + 120
        while ping([node("high_level")]) != {node("high_level")}:
            assert time.monotonic() < deadline, "the continued worker never answered a ping"
    finally:
        app.close()


@pytest.mark.integration
def test_up_after_a_worker_died_starts_that_worker_only(running_fleet: Up, fleet: Fleet) -> None:
    settings, running = running_fleet
    before = live_pids(settings)
    os.kill(before["worker-pr_review"], signal.SIGKILL)
    next(c for c in running if c.name == "worker-pr_review").process.wait(timeout=30)

    events = Recorder()
    started = launcher.up(settings, fleet, simulate=False, services={"broker", "workers", "flower"}, on_event=events)
    running += started
    assert [child.name for child in started] == ["worker-pr_review"]
    after = live_pids(settings)
    assert after["worker-pr_review"] != before["worker-pr_review"]
    assert {k: v for k, v in after.items() if k != "worker-pr_review"} == {
        k: v for k, v in before.items() if k != "worker-pr_review"
    }
    assert sum("already running" in event for event in events) == len(before) - 1
    assert any(event.startswith("worker-pr_review ready (pid") for event in events)
    app = health.control_app(settings, fleet)
    try:
        assert health.ping_nodes(app, [node("pr_review")], timeout=10) == {node("pr_review")}
    finally:
        app.close()


@pytest.mark.integration
def test_restart_replaces_one_groups_worker(running_fleet: Up, fleet: Fleet) -> None:
    settings, running = running_fleet
    before = live_pids(settings)
    events = Recorder()
    child = restart.restart(settings, fleet, "dev_workers", simulate=False, on_event=events)
    running.append(child)
    after = live_pids(settings)
    assert child.pid == after["worker-dev_workers"] != before["worker-dev_workers"]
    assert not pidfiles.process_group_alive(before["worker-dev_workers"])
    assert {k: v for k, v in after.items() if k != "worker-dev_workers"} == {
        k: v for k, v in before.items() if k != "worker-dev_workers"
    }
    assert events[0] == f"stopped worker-dev_workers (pid {before['worker-dev_workers']})"
    assert events[-1].startswith("worker-dev_workers ready (pid")
    assert not pidfiles.restarting(settings.run_dir, "worker-dev_workers")
    replaced = next(c for c in running if c.pid == before["worker-dev_workers"])
    assert supervise.check(replaced) is None  # a supervising `up` keeps watching, through the pidfile
    with pytest.raises(InputError, match="groups: high_level"):
        restart.restart(settings, fleet, "no_such_group", simulate=False, on_event=events)


@pytest.mark.integration
def test_a_killed_child_is_noticed_and_its_pidfile_is_stale(
    running_fleet: Up,
) -> None:
    """Runs last in this module: it kills a worker, then `down` stops the rest."""
    settings, running = running_fleet
    stop = threading.Event()
    stop.set()
    assert supervise.supervise(running, stop, poll_s=0.01) is None  # Ctrl-C: nothing died

    victim = next(child for child in running if child.name == "worker-pr_integ")
    os.kill(victim.pid, signal.SIGKILL)
    victim.process.wait(timeout=10)

    died = supervise.supervise(running, threading.Event(), poll_s=0.05)
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
    after = supervise.supervise(running, threading.Event(), poll_s=0.01)
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
    assert "worker-pr_impl exited with code" in message and "missing.toml" in message  # the log's tail says why
    assert pidfiles.pidfile_names(settings.run_dir) == []
    broker_pid = int(events[0].split("(pid ", 1)[1].split(",")[0])
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


@pytest.mark.integration
def test_a_set_ready_timeout_is_kept_and_stops_what_started(tmp_path: Path, fleet: Fleet) -> None:
    """SWITCHYARD_READY_TIMEOUT (here 0.5 s, too short for a worker) is a fixed limit: no adapting past it."""
    settings = make_settings(tmp_path, ready_timeout=0.5)
    events = Recorder()
    with pytest.raises(ServiceUnavailable) as info:
        launcher.up(settings, fleet, simulate=False, services={"broker", "worker-pr_impl"}, on_event=events)
    message = str(info.value)
    assert "did not become ready within the 0.5s of --ready-timeout/SWITCHYARD_READY_TIMEOUT" in message
    assert "last lines of" in message
    assert pidfiles.pidfile_names(settings.run_dir) == []
    assert not [event for event in events if "worker-pr_impl ready" in event]
