"""``switchyard restart GROUP``: replace one group's worker while the rest of the fleet keeps running.

The worker is stopped (TERM, then KILL after ``STOP_S``) if it runs, and started again through
``launcher.up`` with that one service, so it is ready only once it answers a ping. While it is replaced, a
marker beside its pidfile tells a supervising foreground ``up`` that this exit was asked for.
"""

from __future__ import annotations

from collections.abc import Mapping

from switchyard.errors import InputError
from switchyard.fleet import Fleet
from switchyard.settings import Settings
from workers import pidfiles
from workers.launcher import STOP_S, Event, RunningService, terminate, up
from workers.readiness import ReadyPolicy
from workers.services import WORKER_PREFIX


def restart(
    settings: Settings,
    fleet: Fleet,
    group: str,
    *,
    simulate: bool,
    on_event: Event = print,
    policy: ReadyPolicy | None = None,
    base_env: Mapping[str, str] | None = None,
) -> RunningService:
    """Stop ``group``'s worker if it runs, then start it again and wait until it answers a ping.

    A supervising ``up`` in the foreground sees the restart marker and keeps watching the new worker.
    """
    name = worker_name(fleet, group)
    pidfiles.mark_restarting(settings.run_dir, name)
    try:
        stop_one(settings, name, on_event)
        (child,) = up(
            settings, fleet, simulate=simulate, services={name}, on_event=on_event, policy=policy, base_env=base_env
        )
    finally:
        pidfiles.clear_restarting(settings.run_dir, name)
    return child


def worker_name(fleet: Fleet, group: str) -> str:
    """The service name of ``group``'s worker; InputError naming the groups when there is no such group."""
    names = [g.name for g in fleet.groups]
    if group not in names:
        raise InputError(f"no session group {group!r} in {fleet.source}; groups: {', '.join(names)}")
    return f"{WORKER_PREFIX}{group}"


def simulator_running(settings: Settings) -> bool:
    """True when this data directory's fleet runs the provider simulator (a restart must keep using it)."""
    record = pidfiles.read_pidfile(settings.run_dir, "simulator")
    return record is not None and pidfiles.record_alive(record)


def stop_one(settings: Settings, name: str, on_event: Event) -> None:
    """Stop the service ``name`` if its pidfile names a live process; say what was done."""
    record = pidfiles.read_pidfile(settings.run_dir, name)
    if record is None or not pidfiles.record_alive(record):
        on_event(f"{name} was not running")
        return
    pidfiles.remove_pidfile(settings.run_dir, name)
    terminate({name: record.pid}, STOP_S)
    on_event(f"stopped {name} (pid {record.pid})")
