"""The foreground ``switchyard up``: watch the children it started until Ctrl-C; restart one that dies.

A child that exits is one of three things, told apart by its pidfile:

* its pidfile is gone: ``switchyard down`` stopped it (from another terminal);
* its pidfile now names another live process, or a restart marker is present: ``switchyard restart GROUP``
  replaced it, and the replacement is watched through its pidfile from then on;
* otherwise it died, and the sentence says so with the path of its log.

A child that died is started again (``revive``), as a process supervisor would, so one killed worker does
not take the fleet down; a child that keeps dying (more than ``Restarts.limit`` times in ``Restarts.window_s``)
is a crash loop, and the fleet is stopped with the sentence of its last death.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from types import FrameType

from workers import pidfiles
from workers.launcher import RunningService

Revive = Callable[[RunningService, str], RunningService]  # start a dead child again; the new one


class Restarts:
    """How often each child may be started again: ``limit`` times in any ``window_s`` seconds."""

    def __init__(self, limit: int = 3, window_s: float = 300.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._times: dict[str, deque[float]] = {}

    def allow(self, name: str) -> bool:
        """Count one more restart of ``name`` if it is allowed (False: a crash loop)."""
        now, times = self.clock(), self._times.setdefault(name, deque())
        while times and now - times[0] > self.window_s:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True


def supervise(
    running: Iterable[RunningService],
    stop_event: threading.Event,
    *,
    poll_s: float = 0.5,
    revive: Revive | None = None,
    restarts: Restarts | None = None,
) -> str | None:
    """Wait in the foreground until ``stop_event`` is set (None), or a child is stopped by ``down`` or keeps
    dying (a sentence saying which). A child that died is started again with ``revive`` while ``restarts``
    allows it; without ``revive`` the first death ends the watch.

    The caller calls ``launcher.down`` afterwards in every case.
    """
    children = list(running)
    restarts = restarts or Restarts()
    while not stop_event.wait(poll_s):
        for i, child in enumerate(children):
            verdict = examine(child)
            if verdict is None:
                continue
            sentence, died = verdict
            if not died or revive is None or stop_event.is_set():
                return sentence
            if not restarts.allow(child.name):
                return f"{sentence}; it died {restarts.limit + 1} times in {restarts.window_s:.0f} s"
            try:
                children[i] = revive(child, sentence)
            except Exception as exc:  # noqa: BLE001 -- whatever stopped the new one from starting, it is said
                return f"{sentence}; starting it again failed: {type(exc).__name__}: {exc}"
    return None


def check(child: RunningService) -> str | None:
    """None while ``child`` (or what replaced it) runs; else a sentence saying what became of it."""
    verdict = examine(child)
    return None if verdict is None else verdict[0]


def examine(child: RunningService) -> tuple[str, bool] | None:
    """None while ``child`` (or what replaced it) runs; else the sentence, and whether it died (rather than
    being stopped by ``down``)."""
    code = child.process.poll()
    if code is None:
        return None
    run_dir = child.pidfile.parent
    if pidfiles.restarting(run_dir, child.name):
        return None
    record = pidfiles.read_pidfile(run_dir, child.name)
    if record is None:
        return f"{child.name} (pid {child.pid}) was stopped by `switchyard down`", False
    if record.pid != child.pid:
        if pidfiles.record_alive(record):
            return None  # replaced by `switchyard restart`
        return f"{child.name} (pid {record.pid}, restarted) exited unexpectedly; see {child.spec.log_file}", True
    return f"{child.name} (pid {child.pid}) exited unexpectedly with code {code}; see {child.spec.log_file}", True


def stop_on_signals(stop_event: threading.Event) -> Callable[[], None]:
    """Make SIGINT and SIGTERM set ``stop_event``; returns a function that restores the previous handlers."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop_event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
