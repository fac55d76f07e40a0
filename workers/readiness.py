"""How long ``up`` waits for the services it started, and when it gives up.

A service is ready when it answers for itself (see :mod:`workers.probes`); this module decides only how long
to keep asking. Two modes:

* **A set limit** (``--ready-timeout SECONDS`` or ``SWITCHYARD_READY_TIMEOUT``): give up after exactly that.
* **Adaptive** (the default): wait ``base_s`` on an idle machine, scaled by the load average per core (a
  machine at load 15 on two cores waits 7.5 times longer, up to ``max_scale``), and beyond that for as long
  as a service still pending is visibly starting (its log grew within ``quiet_s``), never past ``cap_s``.

A service whose process exits is reported at once by the caller, whatever the mode: no wait is spent on it.
:func:`give_up` is pure; :func:`wait_ready` gathers the inputs (clock, load, log sizes) it is handed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ReadyPolicy:
    """How long to wait for readiness. ``timeout_s`` set means a fixed limit; None means adaptive."""

    timeout_s: float | None = None
    base_s: float = 60.0  # adaptive: the wait on an idle machine
    max_scale: float = 8.0  # adaptive: the most the load average per core stretches ``base_s``
    quiet_s: float = 30.0  # adaptive: a log that grew this recently means the service is still starting
    cap_s: float = 900.0  # adaptive: never longer than this, whatever the signs of life
    ping_s: float = 2.0  # the first window in which the workers' ping replies are collected
    ping_max_s: float = 8.0  # the window doubles after a round a worker missed, up to this


@dataclass(frozen=True)
class Progress:
    """What the wait has seen so far."""

    elapsed_s: float
    quiet_s: float  # seconds since a pending service's log last grew
    load_per_core: float


def patience_s(policy: ReadyPolicy, load_per_core: float) -> float:
    """The adaptive wait before signs of life are asked for: ``base_s`` stretched by the load per core."""
    return policy.base_s * min(max(load_per_core, 1.0), policy.max_scale)


def give_up(policy: ReadyPolicy, progress: Progress) -> str | None:
    """None to keep waiting, else why the wait ends (a phrase that follows a service's name)."""
    elapsed = progress.elapsed_s
    if policy.timeout_s is not None:
        if elapsed <= policy.timeout_s:
            return None
        return f"did not become ready within the {policy.timeout_s:g}s of --ready-timeout/SWITCHYARD_READY_TIMEOUT"
    if elapsed > policy.cap_s:
        return f"did not become ready in {policy.cap_s:g}s (the most the adaptive wait allows); {_HINT}"
    if elapsed <= patience_s(policy, progress.load_per_core) or progress.quiet_s < policy.quiet_s:
        return None
    return (
        f"did not become ready in {elapsed:.0f}s, its log silent for {progress.quiet_s:.0f}s "
        f"at a load of {progress.load_per_core:.1f} per core; {_HINT}"
    )


_HINT = "to wait longer, pass --ready-timeout SECONDS or set SWITCHYARD_READY_TIMEOUT"


def load_per_core() -> float:
    """The one-minute load average divided by the number of cores (0 where the platform has none)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 0.0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass
class LogWatch:
    """When any of the watched logs last grew, by the clock it is given."""

    clock: Callable[[], float]
    sizes: dict[Path, int] = field(default_factory=dict)
    last_growth: float = 0.0

    def __post_init__(self) -> None:
        self.last_growth = self.clock()

    def quiet_s(self, logs: Sequence[Path]) -> float:
        """Seconds since one of ``logs`` last grew (its size now compared with the last look)."""
        now = self.clock()
        for path in logs:
            size = _size(path)
            if size != self.sizes.get(path):
                self.sizes[path] = size
                self.last_growth = now
        return now - self.last_growth


@dataclass(frozen=True)
class Waiting:
    """The side effects of a wait, replaceable in tests."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    load: Callable[[], float] = load_per_core
    poll_s: float = 0.2


Failure = tuple[list[str], str]  # the services still pending (or the one that exited), and why


def wait_ready(
    logs: dict[str, Path],
    started_at: float,
    policy: ReadyPolicy,
    waiting: Waiting,
    *,
    probe: Callable[[list[str]], list[str]],
    exited: Callable[[list[str]], Failure | None],
    on_ready: Callable[[str, float], None],
) -> Failure | None:
    """Ask ``probe`` which of the services named in ``logs`` are ready until all are (None) or one fails.

    ``exited`` is asked first on every round, so a dead service is reported at once; ``on_ready`` hears each
    service that became ready and the seconds since ``started_at``.
    """
    pending = dict(logs)
    watch = LogWatch(waiting.clock)
    while pending:
        dead = exited(list(pending))
        if dead is not None:
            return dead
        for name in probe(list(pending)):
            if pending.pop(name, None) is not None:
                on_ready(name, waiting.clock() - started_at)
        if not pending:
            return None
        quiet = watch.quiet_s(list(pending.values()))
        why = give_up(policy, Progress(waiting.clock() - started_at, quiet, waiting.load()))
        if why is not None:
            return list(pending), why
        waiting.sleep(waiting.poll_s)
    return None
