"""``switchyard up`` / ``down``: start the local fleet's processes, wait until they serve, and stop them.

Every child runs in its own session (so Ctrl-C at the terminal reaches only the launcher, which then stops
the fleet in order), logs to ``log_dir/<name>.log`` and is recorded in ``run_dir/<name>.pid``. The broker
starts first and must answer before anything else starts; the rest start together. ``down`` stops workers
first (they drain and hand back unacknowledged tasks while the broker still runs), then Flower, the API and
the simulator, and the broker last.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx
from celery import Celery

from switchyard.errors import ConfigError, FleetAlreadyRunning, ServiceUnavailable
from switchyard.fleet import Fleet
from switchyard.settings import Settings
from workers import broker, health, pidfiles
from workers.services import (
    WORKER_PREFIX,
    WORKING_DIR,
    CeleryReady,
    HttpReady,
    RedisReady,
    ServiceSpec,
    Started,
    build_specs,
    select,
)

Event = Callable[[str], None]
LOG_TAIL_LINES = 25
POLL_S = 0.2


@dataclass(frozen=True)
class RunningService:
    """A child started by :func:`up`."""

    spec: ServiceSpec
    process: subprocess.Popen[bytes]
    pidfile: Path

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass(frozen=True)
class ServiceState:
    """What a pidfile says and whether it is still true."""

    name: str
    pid: int
    alive: bool
    stale: bool


def up(
    settings: Settings,
    fleet: Fleet,
    *,
    simulate: bool,
    services: set[str] | None = None,
    on_event: Event = print,
    timeout_s: float = 60,
    base_env: Mapping[str, str] | None = None,
) -> list[RunningService]:
    """Start the fleet (or the named ``services``) and return once every one of them is ready.

    Raises FleetAlreadyRunning when this data directory's fleet runs, ConfigError when a port is taken, and
    ServiceUnavailable (with the tail of the failing service's log) when something does not become ready;
    in every failure, what was started is stopped again.
    """
    _refuse_if_running(settings)
    settings.effective_state_url  # noqa: B018 -- fail at start, not on the first call: a RabbitMQ fleet needs one
    _report_stale(pidfiles.clean_stale(settings.run_dir), on_event)
    env = dict(os.environ if base_env is None else base_env)
    specs = select(build_specs(settings, fleet, simulate=simulate, base_env=env), services)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    _check_ports(settings, specs)
    deadline = time.monotonic() + timeout_s
    started: list[RunningService] = []
    try:
        for batch in _batches(settings, specs):
            started += [_spawn(settings, spec) for spec in batch]
            _wait_ready(settings, fleet, started[-len(batch) :], deadline, on_event)
    except BaseException:
        _stop_services(settings, started, timeout_s=10)
        raise
    return started


def down(settings: Settings, *, timeout_s: float = 20, on_event: Event = print) -> list[str]:
    """Stop every process named by a pidfile, workers first and the broker last; return the names stopped."""
    _report_stale(pidfiles.clean_stale(settings.run_dir), on_event)
    records = [r for r in map(lambda n: pidfiles.read_pidfile(settings.run_dir, n), _names(settings)) if r]
    stopped: list[str] = []
    for rank in sorted({_rank(r.name) for r in records}):
        tier = [r for r in records if _rank(r.name) == rank]
        for record in tier:
            # Removed first: a supervising `up` elsewhere then knows this stop was asked for.
            pidfiles.remove_pidfile(settings.run_dir, record.name)
        _terminate({r.name: r.pid for r in tier}, timeout_s)
        for record in tier:
            on_event(f"stopped {record.name} (pid {record.pid})")
        stopped += [r.name for r in tier]
    return stopped


def fleet_status(settings: Settings, *, clean: bool = False) -> list[ServiceState]:
    """One state per pidfile; with ``clean``, stale pidfiles are removed as well as reported."""
    states: list[ServiceState] = []
    for name in _names(settings):
        record = pidfiles.read_pidfile(settings.run_dir, name)
        is_alive = record is not None and pidfiles.record_alive(record)
        pid = record.pid if record else 0
        states.append(ServiceState(name=name, pid=pid, alive=is_alive, stale=not is_alive))
        if clean and not is_alive:
            pidfiles.remove_pidfile(settings.run_dir, name)
    return states


def supervise(running: Iterable[RunningService], stop_event: threading.Event, *, poll_s: float = 0.5) -> str | None:
    """Wait in the foreground until ``stop_event`` is set (None) or a child dies (a sentence saying which).

    A child whose pidfile is gone was stopped by ``switchyard down`` from elsewhere, and is reported so.
    The caller calls :func:`down` afterwards in every case.
    """
    children = list(running)
    while not stop_event.wait(poll_s):
        for child in children:
            code = child.process.poll()
            if code is None:
                continue
            if not child.pidfile.exists():
                return f"{child.name} (pid {child.pid}) was stopped by `switchyard down`"
            log = child.spec.log_file
            return f"{child.name} (pid {child.pid}) exited unexpectedly with code {code}; see {log}"
    return None


def stop_on_signals(stop_event: threading.Event) -> Callable[[], None]:
    """Make SIGINT and SIGTERM set ``stop_event``; returns a function that restores the previous handlers."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop_event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


# --- starting -------------------------------------------------------------------------------------------


def _refuse_if_running(settings: Settings) -> None:
    live = [s for s in fleet_status(settings) if s.alive]
    if live:
        listed = ", ".join(f"{s.name} (pid {s.pid})" for s in live)
        raise FleetAlreadyRunning(
            f"a fleet is already running for {settings.data_dir}: {listed}; stop it with `switchyard down`"
        )


def _report_stale(records: Iterable[pidfiles.PidRecord], on_event: Event) -> None:
    for record in records:
        on_event(f"removed stale pidfile of {record.name} (pid {record.pid} is gone or is another program)")


def _check_ports(settings: Settings, specs: list[ServiceSpec]) -> None:
    for spec in specs:
        if spec.name == "broker":
            broker.prepare(settings)
        elif spec.port is not None and _port_open(settings.host, spec.port):
            raise ConfigError(
                f"port {spec.port} on {settings.host} is taken, so {spec.name} cannot start; "
                f"set {spec.port_setting} to a free port"
            )


def _port_open(host: str, port: int) -> bool:
    target = "127.0.0.1" if host in {"0.0.0.0", ""} else host  # noqa: S104 - connecting, not binding
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


def _batches(settings: Settings, specs: list[ServiceSpec]) -> list[list[ServiceSpec]]:
    """The broker alone first (or a check of the external one), then everything else at once."""
    first = [s for s in specs if s.name == "broker"]
    rest = [s for s in specs if s.name != "broker"]
    if not first and rest:
        problem = health.broker_ok(settings.effective_broker_url)
        if problem:
            raise ServiceUnavailable(f"{problem}; check SWITCHYARD_BROKER_URL")
    return [batch for batch in (first, rest) if batch]


# Children this process started, by pid: referenced until reaped, so a caller that drops what `up` returned
# (a detached `up`, a test fixture) neither trips Popen's ResourceWarning nor leaves zombies behind.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap() -> None:
    for pid, process in list(_CHILDREN.items()):
        if process.poll() is not None:
            del _CHILDREN[pid]


def _spawn(settings: Settings, spec: ServiceSpec) -> RunningService:
    spec.log_file.parent.mkdir(parents=True, exist_ok=True)
    with spec.log_file.open("ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"--- {stamp} starting {spec.name}: {' '.join(spec.argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(spec.argv),
            env=dict(spec.env),
            cwd=WORKING_DIR,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[process.pid] = process
    pidfile = pidfiles.write_pidfile(settings.run_dir, spec.name, process.pid, spec.match)
    return RunningService(spec=spec, process=process, pidfile=pidfile)


def _wait_ready(
    settings: Settings, fleet: Fleet, batch: list[RunningService], deadline: float, on_event: Event
) -> None:
    pending = {child.name: child for child in batch}
    app = health.control_app(settings, fleet) if any(_is_worker(c) for c in batch) else None
    try:
        while pending:
            _raise_if_exited(pending.values())
            for name in _ready_now(list(pending.values()), app):
                child = pending.pop(name)
                on_event(f"{name} ready (pid {child.pid})")
            if pending and time.monotonic() > deadline:
                raise _failure(next(iter(pending.values())), "did not become ready in time")
            if pending:
                time.sleep(POLL_S)
    finally:
        if app is not None:
            app.close()


def _is_worker(child: RunningService) -> bool:
    return isinstance(child.spec.ready, CeleryReady)


def _raise_if_exited(children: Iterable[RunningService]) -> None:
    for child in children:
        code = child.process.poll()
        if code is not None:
            raise _failure(child, f"exited with code {code}")


def _ready_now(children: list[RunningService], app: Celery | None) -> list[str]:
    ready = [c.name for c in children if not _is_worker(c) and _answers(c.spec.ready)]
    nodes = {c.spec.ready.node: c.name for c in children if isinstance(c.spec.ready, CeleryReady)}
    if nodes and app is not None:
        ready += [nodes[node] for node in health.ping_nodes(app, sorted(nodes)) if node in nodes]
    return ready


def _answers(ready: HttpReady | RedisReady | CeleryReady | Started) -> bool:
    if isinstance(ready, Started):
        return True
    if isinstance(ready, RedisReady):
        return broker.ping(ready.url) is None
    if isinstance(ready, HttpReady):
        try:
            httpx.get(ready.url, timeout=1.0)
        except httpx.TransportError:
            return False
        return True
    return False


def _failure(child: RunningService, why: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"{child.name} {why}; last lines of {child.spec.log_file}:\n{log_tail(child.spec.log_file)}"
    )


def log_tail(path: os.PathLike[str] | str, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' when it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --- stopping -------------------------------------------------------------------------------------------


def _names(settings: Settings) -> list[str]:
    return pidfiles.pidfile_names(settings.run_dir)


def _rank(name: str) -> int:
    """Stop order: workers, then flower/api/simulator, then the broker."""
    if name.startswith(WORKER_PREFIX):
        return 0
    return 2 if name == "broker" else 1


def _stop_services(settings: Settings, started: list[RunningService], *, timeout_s: float) -> None:
    for rank in sorted({_rank(c.name) for c in started}):
        tier = [c for c in started if _rank(c.name) == rank]
        _terminate({c.name: c.pid for c in tier}, timeout_s)
        for child in tier:
            child.process.poll()
            pidfiles.remove_pidfile(settings.run_dir, child.name)


def _terminate(pids: Mapping[str, int], timeout_s: float) -> None:
    """TERM every process group in ``pids``, wait up to ``timeout_s`` for them all, then KILL the rest."""
    for pid in pids.values():
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    remaining = set(pids.values())
    while remaining and time.monotonic() < deadline:
        remaining = {pid for pid in remaining if _group_running(pid)}
        if remaining:
            time.sleep(0.1)
    for pid in remaining:
        _signal_group(pid, signal.SIGKILL)
        _group_running(pid)
    _reap()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _group_running(pid: int) -> bool:
    """Reap ``pid`` if it is our exited child (so it does not linger as a zombie), then look for its group."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return pidfiles.process_group_alive(pid)
