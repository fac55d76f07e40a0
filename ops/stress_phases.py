"""The stress cycle's phases and gates, scaled from the seeds' progressive stress cycle to a 2-core machine.

The seeds (``Stress Cycle Progression``) run Idle 5 min at 0 RPS, Baseline 15 min at 100 RPS / 50 connections,
Light 20 min at 1,000 / 500, Medium 30 min at 5,000 / 2,500, Heavy 30 min at 10,000 / 5,000, Extreme 20 min
at 50,000 / 10,000, then Chaos; their thresholds are an error rate under 2 % (5 % critical) and a p95 response
under 1 s (3 s critical). Here a request is a whole task (a provider call, git work, SQL), so the rates are
tasks per second a 2-core machine running the fleet can take, the durations a tenth of the seeds'
(``--quick``: about 12 s each, the chaos phase 24 s), and the users (Locust's connections) grow with the rate.
The error-rate gate is the seeds' target (2 %) up to medium and their critical line (5 %) above; the p95
submit gate is their critical line (3 s) throughout: on a 2-core machine shared with other work a submission
(an SQL transaction and a broker message) passes the 1 s target only while the machine is quiet, and a gate is
where the cycle stops, not where it would like to be. Pure data and pure functions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from switchyard.errors import InputError

GATES_ENV = "SWITCHYARD_STRESS_GATES"


@dataclass(frozen=True)
class Gates:
    """The most a phase may show. ``None``: not gated in this phase."""

    error_rate: float  # failed submissions / submissions (Locust)
    p95_submit_ms: float  # p95 of POST /api/tasks (Locust)
    p95_queue_wait_s: float  # p95 of started - submitted over the phase's tasks (a task not started yet: now)
    rss_growth_mb: float  # the fleet's workers' resident memory, end of phase minus start (psutil)
    overspend_usd: float = 0.0  # the most any budget's window holds beyond its cap (ledger against caps)
    lost: int = 0  # tasks without exactly one terminal status once the cycle drained (ops.verdict)
    workers_down: int = 0  # workers not running at the end of the phase (the chaos phase's must be back)


@dataclass(frozen=True)
class Phase:
    name: str
    duration_s: float
    quick_s: float
    rate: float  # tasks per second submitted over the API
    users: int  # Locust users (the seeds' connections, scaled)
    latency_ms: int | None  # the simulator's added latency per provider call (None: the fleet file's)
    gates: Gates
    chaos: bool = False  # kill a worker and inject provider faults during the phase
    seed: str = ""  # what the seeds ask of this phase, for the report


PHASES: tuple[Phase, ...] = (
    Phase("idle", 30, 6, 0.0, 0, None, Gates(0.0, 3000, 5, 60), seed="5 min, 0 RPS"),
    Phase("baseline", 90, 12, 0.5, 1, None, Gates(0.02, 3000, 20, 80), seed="15 min, 100 RPS, 50 conn."),
    Phase("light", 120, 12, 1.0, 2, 100, Gates(0.02, 3000, 30, 100), seed="20 min, 1,000 RPS, 500 conn."),
    Phase("medium", 180, 12, 2.0, 4, 250, Gates(0.02, 3000, 45, 120), seed="30 min, 5,000 RPS, 2,500 conn."),
    Phase("heavy", 180, 12, 2.5, 5, 500, Gates(0.05, 3000, 60, 150), seed="30 min, 10,000 RPS, 5,000 conn."),
    Phase("extreme", 120, 12, 4.0, 8, 1000, Gates(0.05, 3000, 90, 200), seed="20 min, 50,000 RPS, 10,000 conn."),
    Phase("chaos", 120, 24, 2.0, 4, 500, Gates(0.05, 3000, 120, 250), chaos=True, seed="variable"),
)
GATE_NAMES = tuple(f.name for f in fields(Gates))


def parse_overrides(texts: Iterable[str], phases: Sequence[Phase] = PHASES) -> dict[tuple[str, str], float]:
    """``PHASE.GATE=VALUE`` (e.g. ``light.p95_submit_ms=1``) into {(phase, gate): value}; ``*`` is every phase."""
    names = [p.name for p in phases]
    out: dict[tuple[str, str], float] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        phase, dot, gate = key.strip().partition(".")
        if not sep or not dot:
            raise InputError(f"a gate override is PHASE.GATE=VALUE (e.g. light.p95_submit_ms=500), got {text!r}")
        if phase != "*" and phase not in names:
            raise InputError(f"no phase {phase!r} in {text!r}; phases: {', '.join(names)}")
        if gate not in GATE_NAMES:
            raise InputError(f"no gate {gate!r} in {text!r}; gates: {', '.join(GATE_NAMES)}")
        try:
            number = float(value)
        except ValueError:
            raise InputError(f"the value in {text!r} is not a number") from None
        if not math.isfinite(number) or number < 0:
            raise InputError(f"the value in {text!r} must be a finite number at least 0")
        for name in names if phase == "*" else [phase]:
            out[(name, gate)] = number
    return out


def overrides_from_env(environ: Mapping[str, str] = os.environ) -> list[str]:
    """``SWITCHYARD_STRESS_GATES``: overrides separated by commas or spaces."""
    return [part for part in environ.get(GATES_ENV, "").replace(",", " ").split() if part]


def with_overrides(phases: Sequence[Phase], overrides: Mapping[tuple[str, str], float]) -> list[Phase]:
    out = []
    for phase in phases:
        mine: dict[str, Any] = {gate: value for (name, gate), value in overrides.items() if name == phase.name}
        for whole in ("lost", "workers_down"):
            if whole in mine:
                mine[whole] = int(mine[whole])
        out.append(replace(phase, gates=replace(phase.gates, **mine)) if mine else phase)
    return out


def failed_gates(gates: Gates, measured: Mapping[str, float | int | None]) -> list[str]:
    """The gates ``measured`` breaks, in the order of :class:`Gates`, each as ``gate: value > limit``; a figure
    not measured (None: no request in an idle phase) passes."""
    out = []
    for name in GATE_NAMES:
        value, limit = measured.get(name), getattr(gates, name)
        if value is not None and value > limit:
            out.append(f"{name}: {_fmt(value)} > {_fmt(limit)}")
    return out


def _fmt(x: float | int) -> str:
    return f"{x:g}" if isinstance(x, int) else f"{x:.4g}"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0-1) of ``values``; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]
