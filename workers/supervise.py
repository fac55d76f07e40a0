"""The foreground ``switchyard up``: watch the children it started until Ctrl-C or until one dies.

A child that exits is one of three things, told apart by its pidfile:

* its pidfile is gone: ``switchyard down`` stopped it (from another terminal);
* its pidfile now names another live process, or a restart marker is present: ``switchyard restart GROUP``
  replaced it, and the replacement is watched through its pidfile from then on;
* otherwise it died, and the sentence says so with the path of its log.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType

from workers import pidfiles
from workers.launcher import RunningService


def supervise(running: Iterable[RunningService], stop_event: threading.Event, *, poll_s: float = 0.5) -> str | None:
    """Wait in the foreground until ``stop_event`` is set (None) or a child dies (a sentence saying which).

    The caller calls ``launcher.down`` afterwards in every case.
    """
    children = list(running)
    while not stop_event.wait(poll_s):
        for child in children:
            verdict = check(child)
            if verdict is not None:
                return verdict
    return None


def check(child: RunningService) -> str | None:
    """None while ``child`` (or what replaced it) runs; else a sentence saying what became of it."""
    code = child.process.poll()
    if code is None:
        return None
    run_dir = child.pidfile.parent
    if pidfiles.restarting(run_dir, child.name):
        return None
    record = pidfiles.read_pidfile(run_dir, child.name)
    if record is None:
        return f"{child.name} (pid {child.pid}) was stopped by `switchyard down`"
    if record.pid != child.pid:
        if pidfiles.record_alive(record):
            return None  # replaced by `switchyard restart`
        return f"{child.name} (pid {record.pid}, restarted) exited unexpectedly; see {child.spec.log_file}"
    return f"{child.name} (pid {child.pid}) exited unexpectedly with code {code}; see {child.spec.log_file}"


def stop_on_signals(stop_event: threading.Event) -> Callable[[], None]:
    """Make SIGINT and SIGTERM set ``stop_event``; returns a function that restores the previous handlers."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop_event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
