"""The faults of the chaos suite. Each one's ``inject`` blocks while the fault lasts and returns the moment (on
the kit's clock) the disruption began; the driver measures recovery from the moment it returns.

| fault            | what it does                                                                             |
|------------------|------------------------------------------------------------------------------------------|
| ``none``         | nothing: the baseline every other row is read against                                   |
| ``worker_kill``  | three rounds: ``kill -9`` of every group's worker, restarted 1 s later by the suite      |
| ``broker_kill``  | ``kill -9`` of the embedded broker, restarted after a 3 s outage                        |
| ``redis_restart``| ``kill -9`` of the external broker (a private redis-server), restarted empty after 3 s   |
| ``storm_*``      | the simulator fails every call of one paid provider (5xx, 529, 429 + Retry-After, 400,   |
|                  | 404, hangs, resets, malformed bodies) for :data:`STORM_S`, then heals; on the kinds that |
|                  | have a next rung. One provider at a time: with both down, a review of an Ollama-made     |
|                  | change (it must avoid its implementer) can only wait out a breaker, by design            |
| ``integ_kill``   | ``kill -9`` of the pr_integ worker while a check command runs, restarted 1 s later       |
| ``postgres_stop``| PostgreSQL stopped for 15 s: a hook (:class:`PostgresControl`), skipped until wired      |
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import httpx

from ops.fleet import ChaosFleet, set_check_command
from ops.redis_server import PrivateRedis
from ops.workload import Mix
from switchyard.errors import ServiceUnavailable
from workers.services import WORKER_PREFIX

Clock = Callable[[], float]
Sleep = Callable[[float], None]
STORM_S = 6.0
HANG_MS = 10_000
KILL_ROUNDS = 3
ROUND_GAP_S = 6.0
OUTAGE_S = 3.0
POSTGRES_OUTAGE_S = 15.0
CHECK_SECONDS = "6.5"  # the slow check of the integ_kill fault: `sleep 6.5`, found by its argv
CHECK_WAIT_S = 240.0


class PostgresControl(Protocol):
    """What the ``postgres_stop`` fault needs from a private PostgreSQL cluster (the integrator wires one)."""

    def stop(self) -> None: ...

    def start(self) -> None: ...


@dataclass
class FaultKit:
    fleet: ChaosFleet
    log: Callable[[str], None]
    clock: Clock = time.monotonic
    sleep: Sleep = time.sleep
    redis: PrivateRedis | None = None
    postgres: PostgresControl | None = None


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Callable[[FaultKit], float]
    mix: Mix = "mixed"
    weight: int = 1
    broker: Literal["embedded", "redis"] = "embedded"
    needs_postgres: bool = False
    # a storm hits one provider and its tasks all have a healthy next rung: none of them should fail
    failures_allowed: bool = True

    def skip_reason(self, kit: FaultKit) -> str | None:
        if self.needs_postgres and kit.postgres is None:
            return "no private PostgreSQL wired (ops.faults.PostgresControl)"
        return None


def nothing(kit: FaultKit) -> float:
    return kit.clock()


def kill_workers(kit: FaultKit) -> float:
    """``kill -9`` one worker of every group, restart them, wait until they answer; three rounds."""
    names = [f"{WORKER_PREFIX}{group.name}" for group in kit.fleet.ctx.fleet.groups]
    began = kit.clock()
    for round_ in range(1, KILL_ROUNDS + 1):
        killed = {name: kit.fleet.kill(name) for name in names}
        kit.log(f"  round {round_}: killed {', '.join(f'{n} ({p})' for n, p in killed.items())}")
        kit.sleep(1.0)
        for name in names:
            kit.fleet.restart(name, wait=False)
        for name in names:
            kit.fleet.wait_ready(kit.fleet.services[name].spec)
        if round_ < KILL_ROUNDS:
            kit.sleep(ROUND_GAP_S)
    return began


def kill_broker(kit: FaultKit) -> float:
    began = kit.clock()
    kit.log(f"  killed the embedded broker (pid {kit.fleet.kill('broker')}); {OUTAGE_S:g} s outage")
    kit.sleep(OUTAGE_S)
    kit.fleet.restart("broker")
    return began


def restart_redis(kit: FaultKit) -> float:
    if kit.redis is None:
        raise ServiceUnavailable("the redis_restart fault runs on the fleet with a private redis-server")
    began = kit.clock()
    kit.redis.kill()
    kit.log(f"  killed the private redis-server on port {kit.redis.port}; {OUTAGE_S:g} s outage")
    kit.sleep(OUTAGE_S)
    kit.redis.start()
    return began


def storm(provider: str, status: int | str, **extra: float) -> Callable[[FaultKit], float]:
    """Every call to ``provider`` fails with ``status`` for :data:`STORM_S`, then the simulator heals."""

    def inject(kit: FaultKit) -> float:
        url = f"{kit.fleet.simulator_url}/_sim/providers/{provider}"
        began = kit.clock()
        try:
            httpx.post(url, json={"error_rate": 1.0, "error_status": status, **extra}, timeout=10).raise_for_status()
            kit.sleep(STORM_S)
        finally:
            httpx.post(f"{url}/heal", timeout=10).raise_for_status()
        return began

    return inject


def kill_integ_during_check(kit: FaultKit) -> float:
    """Slow the environments' check, wait until one runs, ``kill -9`` the pr_integ worker, restart it."""
    set_check_command(kit.fleet.ctx, f"sleep {CHECK_SECONDS}")
    try:
        deadline = kit.clock() + CHECK_WAIT_S
        while not check_processes():
            if kit.clock() > deadline:
                raise ServiceUnavailable(f"no pr_integ check ran within {CHECK_WAIT_S:.0f}s")
            kit.sleep(0.2)
        began = kit.clock()
        pid = kit.fleet.kill(f"{WORKER_PREFIX}pr_integ")
        kit.log(f"  killed worker-pr_integ (pid {pid}) during its check")
        kit.sleep(1.0)
        orphans = check_processes()
        if orphans:
            kit.log(f"  the check outlived its worker: pids {orphans}")
        kit.fleet.restart(f"{WORKER_PREFIX}pr_integ")
    finally:
        set_check_command(kit.fleet.ctx, "true")
    return began


def check_processes(proc: Path = Path("/proc")) -> list[int]:
    """Pids of running ``sleep CHECK_SECONDS`` processes (the slow check)."""
    found = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[:2] == [b"sleep", CHECK_SECONDS.encode()]:
                found.append(int(entry.name))
    return found


def stop_postgres(kit: FaultKit) -> float:
    if kit.postgres is None:
        raise ServiceUnavailable("no private PostgreSQL is wired for the postgres_stop fault")
    began = kit.clock()
    kit.postgres.stop()
    try:
        kit.sleep(POSTGRES_OUTAGE_S)
    finally:
        kit.postgres.start()
    return began


FAULTS: tuple[Fault, ...] = (
    Fault("none", nothing),
    Fault("storm_500_claude", storm("claude", 500), mix="fallback", failures_allowed=False),
    Fault("storm_529_claude", storm("claude", 529), mix="fallback", failures_allowed=False),
    Fault("storm_429_codex", storm("codex", 429, retry_after_s=2.0), mix="fallback", failures_allowed=False),
    Fault("storm_400_claude", storm("claude", 400), mix="fallback", failures_allowed=False),
    Fault("storm_404_codex", storm("codex", 404), mix="fallback", failures_allowed=False),
    Fault("storm_hang_claude", storm("claude", "timeout", hang_ms=HANG_MS), mix="fallback", failures_allowed=False),
    Fault("storm_reset_codex", storm("codex", "reset"), mix="fallback", failures_allowed=False),
    Fault("storm_malformed_claude", storm("claude", "malformed"), mix="fallback", failures_allowed=False),
    Fault("broker_kill", kill_broker, weight=2),
    Fault("worker_kill", kill_workers, weight=3),
    Fault("integ_kill", kill_integ_during_check, mix="pipeline"),
    Fault("postgres_stop", stop_postgres, weight=2, needs_postgres=True),
    Fault("redis_restart", restart_redis, weight=2, broker="redis"),
)
