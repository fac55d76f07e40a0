"""A real local fleet for the chaos suite, in a home of its own, on free ports.

Started by the real launcher (:func:`workers.launcher.up`): the embedded broker (unless an external broker is
named), the simulator, one ``celery worker`` per session group and celery beat; Flower and the status API
are left out (the suite reads SQL). A killed service is started again from the very spec the launcher used,
and recorded in the same pidfile, so :func:`workers.launcher.down` stops it too. :meth:`ChaosFleet.stop`
stops everything, including what a fault left behind (the process groups of killed workers).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from environments.sample import make_sample_repo
from environments.workspace import ensure_workspace
from environments.workspace import record as record_environment
from store import repo
from store.budgets import upsert_override
from store.db import session_scope
from store.models import Environment
from switchyard.budgets import Budget
from switchyard.errors import ServiceUnavailable
from switchyard.settings import Settings, load_settings
from tasks.context import Context, build_context
from tasks.send import prepare_database
from workers import broker, health, launcher, pidfiles
from workers.readiness import ReadyPolicy
from workers.services import CeleryReady, ServiceSpec

Log = Callable[[str], None]
POLL_S = 0.5
CHAOS_CAP_MICROS = 10_000 * 1_000_000  # the suite's spend is simulated: no budget may block it
SAMPLE_BRANCHES = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def chaos_settings(home: Path, *, database_url: str | None, broker_url: str | None) -> Settings:
    """Settings for a fleet of its own: its home, free ports, no real provider key or address."""
    return load_settings(
        home=home,
        profile="development",
        database_url=database_url,
        broker_url=broker_url,
        state_url=None,
        simulator_url=None,
        workspace=None,
        broker_port=free_port(),
        simulator_port=free_port(),
        api_port=free_port(),
        flower_port=free_port(),
        anthropic_api_key=None,
        openai_api_key=None,
        anthropic_base_url=None,
        openai_base_url=None,
        ollama_host=None,
    )


@dataclass
class ChaosFleet:
    ctx: Context
    services: dict[str, launcher.RunningService]
    spawned: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ready_timeout_s: float = 180.0

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def workspace(self) -> Path:
        return self.settings.workspace_dir

    @property
    def simulator_url(self) -> str:
        return self.settings.effective_simulator_url

    def pid(self, name: str) -> int | None:
        record = pidfiles.read_pidfile(self.settings.run_dir, name)
        return record.pid if record else None

    def dead(self) -> list[str]:
        """Services whose recorded process is gone (one a fault did not restart, or one that crashed)."""
        run_dir = self.settings.run_dir
        records = {name: pidfiles.read_pidfile(run_dir, name) for name in self.services}
        return sorted(n for n, r in records.items() if r is None or not pidfiles.record_alive(r))

    def kill(self, name: str) -> int | None:
        """``kill -9`` of the service's main process (not its group: what it started is left to the fleet)."""
        pid = self.pid(name)
        if pid is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._reap(pid)
        return pid

    def restart(self, name: str, *, wait: bool = True) -> int:
        """Start ``name`` again from the launcher's spec; with ``wait``, until it answers."""
        spec = self.services[name].spec
        process = launcher.spawn(self.settings, spec).process
        self.spawned[f"{name}#{process.pid}"] = process
        if wait:
            self.wait_ready(spec)
        return process.pid

    def wait_ready(self, spec: ServiceSpec) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while not self._answers(spec):
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"chaos: {spec.name} did not answer again in {self.ready_timeout_s:.0f}s")
            time.sleep(POLL_S)

    def _answers(self, spec: ServiceSpec) -> bool:
        if isinstance(spec.ready, CeleryReady):
            app = health.control_app(self.settings, self.ctx.fleet)
            try:
                return bool(health.ping_nodes(app, [spec.ready.node]))
            except Exception:  # noqa: BLE001 -- any broker trouble means "not yet"
                return False
            finally:
                app.close()
        if spec.name == "broker":
            return broker.ping(broker.local_url(self.settings)) is None
        return True

    def _reap(self, pid: int) -> None:
        for running in self.services.values():
            if running.pid == pid:
                running.process.wait(timeout=10)
        for process in self.spawned.values():
            if process.pid == pid:
                process.wait(timeout=10)

    def stop(self, log: Log) -> None:
        """Stop the fleet (workers first, the broker last), then kill any group a fault orphaned."""
        launcher.down(self.settings, timeout_s=20, on_event=log)
        for process in [r.process for r in self.services.values()] + list(self.spawned.values()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


def start_fleet(
    settings: Settings, *, log: Log, ready_timeout_s: float, extra: frozenset[str] = frozenset(), open_caps: bool = True
) -> ChaosFleet:
    """Start the fleet's processes (and the ``extra`` services, e.g. the status API) and prepare what the tasks
    need: schema, environments, and (``open_caps``) budgets no fault is hidden behind."""
    ctx = build_context(settings)
    prepare_database(ctx.database_url)
    wanted = {"simulator", "workers", "beat", *extra} | ({"broker"} if settings.embedded_broker else set())
    running = launcher.up(settings, ctx.fleet, simulate=True, services=wanted, on_event=log, policy=ReadyPolicy())
    fleet = ChaosFleet(ctx, {r.name: r for r in running}, ready_timeout_s=ready_timeout_s)
    try:
        prepare_environments(ctx)
        if open_caps:
            open_budgets(ctx)
    except BaseException:
        fleet.stop(log)
        raise
    return fleet


def prepare_environments(ctx: Context) -> None:
    """A sample repository with feature branches, and the fleet's environments on it (recorded in SQL)."""
    sample = ctx.settings.data_dir / "chaos" / "sample-repo"
    if not sample.exists():
        make_sample_repo(sample, feature_branches=SAMPLE_BRANCHES)
    envs = ctx.fleet.environments
    report = ensure_workspace(
        str(sample),
        ctx.settings.workspace_dir,
        envs.names,
        envs.stages,
        base_port=envs.base_port,
        check_command="true",
        ports={name: envs.port_for(name) for name in envs.names},
    )
    with session_scope(ctx.database_url) as session:
        repo.sync_groups(session, ctx.fleet)
        for info in report.environments:
            record_environment(session, info)


def set_check_command(ctx: Context, command: str) -> None:
    """The check every environment's merge queue runs (the pr_integ fault needs a slow one)."""
    with session_scope(ctx.database_url) as session:
        for env in session.query(Environment):
            env.check_command = command


def open_budgets(ctx: Context) -> None:
    """Caps far above what the suite spends, so no fault is hidden behind ``budget_exhausted``."""
    now = datetime.now(UTC)
    with session_scope(ctx.database_url) as session:
        db = session.connection()
        for window in ("hour", "day"):
            budget = Budget(scope="all", target="*", window=window, cap_micros=CHAOS_CAP_MICROS, source="override")
            upsert_override(db, budget=budget, now=now)
