"""The one place that turns (settings, fleet, options) into the processes of a local fleet.

:func:`build_specs` returns :class:`ServiceSpec` records: what to run, with which environment, where it
logs, how to tell it is ready, which port (and which setting moves it). The launcher runs them; the compose
generator reuses :func:`worker_args` and :func:`flower_args`, so ``-Q``/``-c`` come from the same groups list.

Worker flags, decided deliberately:

* ``-P threads -c <sessions>``: provider calls are I/O, and one slot per agent session.
* ``-E``: task events on, for Flower (also set in ``celeryconfig``; explicit here because Flower needs it).
* ``--without-mingle``: mingle makes every starting worker wait for its peers to send their revoked-task
  lists and clocks. We do not rely on Celery revokes (a cancelled task is a status in SQL that the task
  checks), and the wait slows every start of five workers at once.
* ``--without-gossip``: gossip makes every worker consume every other worker's events, traffic that grows
  with the square of the worker count and feeds only leader election and mingle, which we do not use.
* heartbeats stay **on**: Flower and ``inspect`` use worker heartbeats to tell online from offline workers.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from celeryconfig import MAINTENANCE_QUEUE
from switchyard.errors import InputError
from switchyard.fleet import Fleet, GroupConfig
from switchyard.settings import REPO_ROOT, Settings
from workers import broker

CELERY_APP = "tasks.app"
MONITOR_APP = "tasks.app:monitor"  # Flower's: no task modules loaded (tasks/app.py)
WORKER_PREFIX = "worker-"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
WORKING_DIR = REPO_ROOT  # children run from the repository root, so tasks.app, web.app and providers import


@dataclass(frozen=True)
class HttpReady:
    """Ready when ``url`` answers HTTP (any status: the server is serving; health is judged elsewhere)."""

    url: str


@dataclass(frozen=True)
class RedisReady:
    """Ready when the Redis-speaking server at ``url`` answers PING."""

    url: str


@dataclass(frozen=True)
class CeleryReady:
    """Ready when the worker node ``node`` answers a Celery ping."""

    node: str


@dataclass(frozen=True)
class Started:
    """Ready once started: the process serves nothing to ask (celery beat); ``supervise`` notices if it exits."""


Readiness = HttpReady | RedisReady | CeleryReady | Started


@dataclass(frozen=True)
class ServiceSpec:
    """One process of the local fleet. ``env`` may hold secrets: it is never part of the repr."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False, compare=False, hash=False)
    ready: Readiness
    match: str
    log_file: Path
    stop_rank: int
    port: int | None = None
    port_setting: str | None = None

    @property
    def pidfile_name(self) -> str:
        return self.name


def worker_node(group: GroupConfig, hostname: str | None = None) -> str:
    """The Celery node name of ``group``'s worker; ``%h`` in argv, expanded by Celery to the host name."""
    return f"{group.name}@{hostname or '%h'}"


def worker_args(group: GroupConfig) -> list[str]:
    """Arguments after ``celery`` that run ``group``'s worker pool (flags: see module docstring)."""
    return [
        "-A", CELERY_APP, "worker",
        "-Q", f"{group.queue},{MAINTENANCE_QUEUE}",
        "-n", worker_node(group),
        "-P", "threads",
        "-c", str(group.sessions),
        "-E",
        "--without-mingle",
        "--without-gossip",
        "--loglevel", "INFO",
    ]  # fmt: skip


FLOWER_SAVE_EVERY_MS = 15_000  # a Flower killed with -9 loses at most this much of its history


def flower_args(host: str, port: int, db: Path) -> list[str]:
    """Arguments after ``celery`` that run Flower on ``host:port``, keeping its history in ``db`` across restarts
    (Flower's persistent mode: saved every :data:`FLOWER_SAVE_EVERY_MS` and when it stops, loaded at start)."""
    return [
        "-A", MONITOR_APP, "flower", f"--address={host}", f"--port={port}",
        "--persistent=True", f"--db={db}", f"--state_save_interval={FLOWER_SAVE_EVERY_MS}",
    ]  # fmt: skip


def beat_args(schedule: Path) -> list[str]:
    """Arguments after ``celery`` that run beat (the periodic upkeep, see celeryconfig's beat_schedule)."""
    return ["-A", CELERY_APP, "beat", "-s", str(schedule), "--loglevel", "INFO"]


def api_args(host: str, port: int) -> list[str]:
    """Arguments after ``python -m`` that run the status API."""
    return ["uvicorn", "web.app:create_app", "--factory", "--host", host, "--port", str(port)]


PROVIDER_VARIABLES = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL", "OLLAMA_HOST")


def child_env(settings: Settings, *, simulate: bool, base_env: Mapping[str, str]) -> dict[str, str]:
    """The environment of every child: the parent's (minus its SWITCHYARD_* and provider variables), then the
    settings in force, which alone decide the providers' keys and addresses.

    API keys travel here only, never on argv; the spec that carries this mapping never prints it.
    """
    env = {k: v for k, v in base_env.items() if not k.startswith("SWITCHYARD_") and k not in PROVIDER_VARIABLES}
    env.update(
        SWITCHYARD_HOME=str(settings.home),
        SWITCHYARD_PROFILE=settings.profile,
        SWITCHYARD_FLEET_FILE=str(settings.fleet_file),
        SWITCHYARD_BROKER_URL=settings.effective_broker_url,
        SWITCHYARD_DATABASE_URL=settings.effective_database_url,
        SWITCHYARD_STATE_URL=settings.effective_state_url,
        SWITCHYARD_CLAUDE_CLI=settings.claude_cli,
        SWITCHYARD_CODEX_CLI=settings.codex_cli,
        SWITCHYARD_SIMULATE="true" if simulate else "false",
        SWITCHYARD_SIMULATOR_URL=settings.effective_simulator_url,
        SWITCHYARD_HOST=settings.host,
        SWITCHYARD_BROKER_PORT=str(settings.broker_port),  # the demo profile derives its broker URL from it
        SWITCHYARD_API_PORT=str(settings.api_port),
        SWITCHYARD_FLOWER_PORT=str(settings.flower_port),
        SWITCHYARD_SIMULATOR_PORT=str(settings.simulator_port),
        SWITCHYARD_LOG_LEVEL=settings.effective_log_level,
        SWITCHYARD_PRODUCTION_SIMULATOR="true" if settings.production_simulator else "false",
        PYTHONUNBUFFERED="1",
    )
    if settings.api_auth is not None:  # the children refuse or allow exactly what the parent did
        env["SWITCHYARD_API_AUTH"] = settings.api_auth
    if settings.workspace is not None:
        env["SWITCHYARD_WORKSPACE"] = str(settings.workspace)
    env.update(_secrets(settings))
    return env


def _secrets(settings: Settings) -> dict[str, str]:
    pairs = {
        "ANTHROPIC_API_KEY": settings.anthropic_api_key,
        "OPENAI_API_KEY": settings.openai_api_key,
    }
    out = {name: secret.get_secret_value() for name, secret in pairs.items() if secret is not None}
    if settings.alert_urls is not None:  # alert URLs hold webhook tokens: the environment only, like the keys
        out["SWITCHYARD_ALERT_URLS"] = settings.alert_urls.get_secret_value()
    plain = {
        "ANTHROPIC_BASE_URL": settings.anthropic_base_url,
        "OPENAI_BASE_URL": settings.openai_base_url,
        "OLLAMA_HOST": settings.ollama_host,
    }
    out.update({name: value for name, value in plain.items() if value})
    return out


def build_specs(settings: Settings, fleet: Fleet, *, simulate: bool, base_env: Mapping[str, str]) -> list[ServiceSpec]:
    """Every service of the local fleet, in start order: broker, simulator, workers, beat, flower, api."""
    env = child_env(settings, simulate=simulate, base_env=base_env)
    specs: list[ServiceSpec] = []
    if settings.embedded_broker:
        specs.append(_broker_spec(settings, env))
    if simulate:
        specs.append(_simulator_spec(settings, env))
    specs += [_worker_spec(settings, group, env) for group in fleet.groups]
    specs += [_beat_spec(settings, env), _flower_spec(settings, env), _api_spec(settings, env)]
    return specs


def select(specs: Iterable[ServiceSpec], names: set[str] | None) -> list[ServiceSpec]:
    """The specs named in ``names`` (``"workers"`` means every worker); all of them when ``names`` is None."""
    specs = list(specs)
    if names is None:
        return specs
    known = {spec.name for spec in specs} | {"workers"}
    unknown = names - known
    if unknown:
        raise InputError(f"unknown service(s) {sorted(unknown)}; known: {sorted(known)}")
    return [s for s in specs if s.name in names or ("workers" in names and s.name.startswith(WORKER_PREFIX))]


def _log(settings: Settings, name: str) -> Path:
    return settings.log_dir / f"{name}.log"


def _broker_spec(settings: Settings, env: Mapping[str, str]) -> ServiceSpec:
    return ServiceSpec(
        name="broker",
        argv=tuple(broker.broker_argv(settings)),
        env=env,
        ready=RedisReady(broker.local_url(settings)),
        match=str(broker.broker_paths(settings).config),
        log_file=_log(settings, "broker"),
        stop_rank=2,
        port=settings.broker_port,
        port_setting=broker.PORT_SETTING,
    )


def _simulator_spec(settings: Settings, env: Mapping[str, str]) -> ServiceSpec:
    host, port = settings.host, settings.simulator_port
    argv = (sys.executable, "-m", "simulator.server", "--host", host, "--port", str(port))
    return ServiceSpec(
        name="simulator",
        argv=(*argv, "--fleet", str(settings.fleet_file)),
        env=env,
        ready=HttpReady(f"http://{_url_host(host)}:{port}/_sim/health"),
        match="simulator.server",
        log_file=_log(settings, "simulator"),
        stop_rank=1,
        port=port,
        port_setting="SWITCHYARD_SIMULATOR_PORT",
    )


def _worker_spec(settings: Settings, group: GroupConfig, env: Mapping[str, str]) -> ServiceSpec:
    name = f"{WORKER_PREFIX}{group.name}"
    return ServiceSpec(
        name=name,
        argv=(sys.executable, "-m", "celery", *worker_args(group)),
        env=env,
        ready=CeleryReady(worker_node(group, socket.gethostname())),
        match=f"-n {worker_node(group)}",
        log_file=_log(settings, name),
        stop_rank=0,
    )


def _beat_spec(settings: Settings, env: Mapping[str, str]) -> ServiceSpec:
    schedule = settings.data_dir / "celerybeat-schedule"  # beat's own record of when each entry last ran
    return ServiceSpec(
        name="beat",
        argv=(sys.executable, "-m", "celery", *beat_args(schedule)),
        env=env,
        ready=Started(),
        match=f"beat -s {schedule}",
        log_file=_log(settings, "beat"),
        stop_rank=1,
    )


def _flower_spec(settings: Settings, env: Mapping[str, str]) -> ServiceSpec:
    host, port = settings.host, settings.flower_port
    flower_env = {**dict(env), **flower_auth_env(settings)}
    if settings.flower_credentials is not None:
        flower_env.pop("FLOWER_UNAUTHENTICATED_API", None)  # not even when the parent's environment has it
    return ServiceSpec(
        name="flower",
        argv=(sys.executable, "-m", "celery", *flower_args(host, port, flower_db(settings))),
        env=flower_env,
        ready=HttpReady(f"http://{_url_host(host)}:{port}/healthcheck"),
        match=" ".join(flower_args(host, port, flower_db(settings))[2:5]),
        log_file=_log(settings, "flower"),
        stop_rank=1,
        port=port,
        port_setting="SWITCHYARD_FLOWER_PORT",
    )


def flower_db(settings: Settings) -> Path:
    """Where Flower keeps its task history (the profile's data directory)."""
    return settings.data_dir / "flower.db"


def flower_auth_env(settings: Settings) -> dict[str, str]:
    """How Flower is told who may use it: basic auth (``FLOWER_BASIC_AUTH``, in the environment, never on
    argv) whenever ``settings.flower_credentials`` has a login, which it always has outside development.

    Flower 2 answers its HTTP API only with auth configured, unless FLOWER_UNAUTHENTICATED_API is set. That
    flag is set only in development on loopback with no password set: there the API is as private as the
    machine's users, and the CLI and tests read it. Anywhere else Flower asks for the login.
    """
    credentials = settings.flower_credentials
    if credentials is not None:
        user, password = credentials
        return {"FLOWER_BASIC_AUTH": f"{user}:{password}"}
    if settings.host in LOOPBACK:
        return {"FLOWER_UNAUTHENTICATED_API": "true"}
    return {}


def _api_spec(settings: Settings, env: Mapping[str, str]) -> ServiceSpec:
    host, port = settings.host, settings.api_port
    return ServiceSpec(
        name="api",
        argv=(sys.executable, "-m", *api_args(host, port)),
        env=env,
        ready=HttpReady(f"http://{_url_host(host)}:{port}/api/multi-env/health"),
        match="web.app:create_app",
        log_file=_log(settings, "api"),
        stop_rank=1,
        port=port,
        port_setting="SWITCHYARD_API_PORT",
    )


def _url_host(host: str) -> str:
    """Where to reach a server bound to ``host``: a wildcard bind is reached on loopback."""
    if host in {"0.0.0.0", "", "::"}:  # noqa: S104 - we connect to, not bind, this address
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
