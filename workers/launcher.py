"""``switchyard up`` / ``down``: start the local fleet's processes, wait until they serve, and stop them.

Every child runs in its own session (so Ctrl-C at the terminal reaches only the launcher, which then stops
the fleet in order), logs to ``log_dir/<name>.log`` and is recorded in ``run_dir/<name>.pid``. A service
whose pidfile names a live process is not started again: after a worker died, ``up`` starts that worker
alone. The broker starts first and must answer before anything else starts; the rest start together, and
each is ready when it answers for itself (:mod:`workers.probes`), waited for as :mod:`workers.readiness`
decides. The data, log and run directories are made 0700, logs and pidfiles 0600, and every child runs with
umask 077, so what it writes (the AOF, the SQLite WAL, beat's schedule) is private too (:mod:`switchyard.private`).
``down`` stops workers first (they drain and hand back unacknowledged tasks while the broker still
runs), then Flower, the API and the simulator, and the broker last.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from switchyard.errors import ConfigError, FleetAlreadyRunning, ServiceUnavailable
from switchyard.fleet import Fleet
from switchyard.private import PRIVATE_UMASK, private_dir, private_file
from switchyard.settings import Settings
from workers import broker, health, pidfiles, probes, readiness
from workers.readiness import ReadyPolicy, Waiting
from workers.services import WORKER_PREFIX, WORKING_DIR, CeleryReady, ServiceSpec, build_specs, select

Event = Callable[[str], None]
LOG_TAIL_LINES = 25
STOP_S = 20.0  # how long a stopped service may take to drain before it is killed
WAITING = Waiting()


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
    policy: ReadyPolicy | None = None,
    base_env: Mapping[str, str] | None = None,
    waiting: Waiting = WAITING,
) -> list[RunningService]:
    """Start what is missing of the fleet (or of the named ``services``); return once each one is ready.

    Services whose pidfile names a live process are left alone and reported, so after a worker died ``up``
    starts that worker only. Readiness waits as ``policy`` says (default: ``settings.ready_timeout``, adaptive
    when unset). Raises FleetAlreadyRunning when every service asked for already runs, ConfigError when a
    port is taken, and ServiceUnavailable (with the tail of the failing service's log) when one exits or does
    not become ready; in every failure, what this call started is stopped again.
    """
    began = waiting.clock()
    private_dir(settings.data_dir)
    settings.effective_state_url  # noqa: B018 -- fail at start, not on the first call: a RabbitMQ fleet needs one
    _report_stale(pidfiles.clean_stale(settings.run_dir), on_event)
    env = dict(os.environ if base_env is None else base_env)
    specs = select(build_specs(settings, fleet, simulate=simulate, base_env=env), services)
    specs = _missing(settings, specs, on_event)
    private_dir(settings.log_dir)
    _check_ports(settings, specs)
    policy = policy or ReadyPolicy(timeout_s=settings.ready_timeout)
    started: list[RunningService] = []
    try:
        for batch in _batches(settings, specs):
            started += [spawn(settings, spec) for spec in batch]
            _wait_ready(
                settings, fleet, started[-len(batch) :], began=began, policy=policy, waiting=waiting, on_event=on_event
            )
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
        terminate({r.name: r.pid for r in tier}, timeout_s)
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


# --- starting -------------------------------------------------------------------------------------------


def _missing(settings: Settings, specs: list[ServiceSpec], on_event: Event) -> list[ServiceSpec]:
    """The specs whose service does not run; FleetAlreadyRunning when that leaves none."""
    live = {s.name: s.pid for s in fleet_status(settings) if s.alive}
    running = [s for s in specs if s.name in live]
    if running and len(running) == len(specs):
        listed = ", ".join(f"{s.name} (pid {live[s.name]})" for s in running)
        raise FleetAlreadyRunning(
            f"a fleet is already running for {settings.data_dir}: {listed}; stop it with `switchyard down`, "
            "or restart one group's worker with `switchyard restart GROUP`"
        )
    for spec in running:
        on_event(f"{spec.name} already running (pid {live[spec.name]})")
    return [s for s in specs if s.name not in live]


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


def spawn(settings: Settings, spec: ServiceSpec) -> RunningService:
    """Start ``spec`` in a session of its own, its output appended to its (private) log, and write its pidfile."""
    private_dir(spec.log_file.parent)
    with private_file(spec.log_file).open("ab") as log:
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
            umask=PRIVATE_UMASK,  # what the child creates (AOF, WAL, beat's schedule) is the user's alone
        )
    _CHILDREN[process.pid] = process
    pidfile = pidfiles.write_pidfile(settings.run_dir, spec.name, process.pid, spec.match)
    return RunningService(spec=spec, process=process, pidfile=pidfile)


def _wait_ready(
    settings: Settings,
    fleet: Fleet,
    batch: list[RunningService],
    *,
    began: float,
    policy: ReadyPolicy,
    waiting: Waiting,
    on_event: Event,
) -> None:
    children = {child.name: child for child in batch}
    workers = any(isinstance(c.spec.ready, CeleryReady) for c in batch)
    app = health.control_app(settings, fleet) if workers else None
    ping = probes.Pinger(app, policy.ping_s, policy.ping_max_s) if app is not None else None

    def ready(child: str, seconds: float) -> None:
        on_event(f"{child} ready (pid {children[child].pid}, {seconds:.1f}s)")

    try:
        failed = readiness.wait_ready(
            {name: child.spec.log_file for name, child in children.items()},
            began,
            policy,
            waiting,
            probe=lambda names: probes.ready_services([children[n].spec for n in names], ping),
            exited=lambda names: _exited([children[n] for n in names]),
            on_ready=ready,
        )
    finally:
        if app is not None:
            app.close()
    if failed is not None:
        names, why = failed
        raise _failure([children[n] for n in names], why)


def _exited(children: Iterable[RunningService]) -> readiness.Failure | None:
    for child in children:
        code = child.process.poll()
        if code is not None:
            return [child.name], f"exited with code {code} while starting"
    return None


def _failure(children: list[RunningService], why: str) -> ServiceUnavailable:
    """The first service's log tail; the others still pending are named."""
    first = children[0]
    others = f" (still pending too: {', '.join(c.name for c in children[1:])})" if children[1:] else ""
    log = first.spec.log_file
    return ServiceUnavailable(f"{first.name} {why}{others}; last lines of {log}:\n{log_tail(log)}")


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
        terminate({c.name: c.pid for c in tier}, timeout_s)
        for child in tier:
            child.process.poll()
            pidfiles.remove_pidfile(settings.run_dir, child.name)


def terminate(pids: Mapping[str, int], timeout_s: float) -> None:
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
