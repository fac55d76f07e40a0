"""``switchyard stress``: the progressive stress cycle (idle → baseline → light → medium → heavy → extreme →
chaos) against a real fleet, with gates per phase; stops at the first gate that fails.

The load is Locust's (``locust -f ops/stress_locust.py --headless`` in a subprocess, its LoadTestShape walking
:data:`ops.stress_phases.PHASES`); this driver starts the fleet (the chaos suite's :func:`ops.fleet.start_fleet`
plus the status API, supervised like a foreground ``switchyard up``: a worker that dies is started again),
follows the shape's phase boundaries, sets the simulator's latency per phase, measures each phase when it ends
and checks its gates, and in the chaos phase kills a worker (``kill -9``) and makes two providers fail part
of their calls while the load goes on. Once the load stops it waits for the tasks to settle and counts the
lost ones per phase (:mod:`ops.verdict`). Writes ``stress.json`` and ``stress.html`` in the output directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import func, select

from ops import observe, verdict
from ops.fleet import SAMPLE_BRANCHES, ChaosFleet, chaos_settings, start_fleet
from ops.stress_phases import Phase, failed_gates, percentile
from ops.stress_report import html_page
from ops.verdict import Sample
from store.costs import budget_status
from store.db import session_scope
from store.models import Task
from switchyard.errors import InputError, ServiceUnavailable
from switchyard.settings import Settings, load_settings
from tasks.context import Context, build_context
from tasks.pipeline import follow_up_id
from workers import launcher, pidfiles, supervise
from workers.services import WORKER_PREFIX

Log = Callable[[str], None]
LOCUSTFILE = Path(__file__).with_name("stress_locust.py")
KINDS = (("pr_review", 3), ("dev_task", 3), ("pr_impl", 1))
SAMPLE_S = 2.0
POLL_S = 0.5
READY_TIMEOUT_S = 300.0
DRAIN_S = {True: 120.0, False: 300.0}  # quick, full: how long the settled count waits for the last tasks
CHAOS_VICTIM = f"{WORKER_PREFIX}dev_workers"
CHAOS_FAULTS = (
    ("claude", {"error_rate": 0.5, "error_status": 529}),
    ("codex", {"error_rate": 0.5, "error_status": 500}),
)
MB = 1024 * 1024


@dataclass
class Options:
    quick: bool = False
    out: Path = Path("stress-report")
    database_url: str | None = None
    attach: bool = False
    keep: bool = False
    phases: Sequence[Phase] = ()


@dataclass
class PhaseResult:
    phase: Phase
    started: float | None = None  # epoch seconds
    ended: float | None = None
    measured: dict[str, float | int | None] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    state: str = "not run"  # passed, failed, interrupted (a gate failed earlier), not run
    locust: dict[str, Any] = field(default_factory=dict)
    series: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    rss_start_mb: float | None = None
    root_ids: list[str] = field(default_factory=list)

    def duration(self, quick: bool) -> float:
        return self.phase.quick_s if quick else self.phase.duration_s


class Fleet:
    """The fleet under load: one this driver started (``own``, supervised here), or one already running."""

    def __init__(self, ctx: Context, own: ChaosFleet | None) -> None:
        self.ctx, self.own = ctx, own
        self.stop_event = threading.Event()
        self.supervisor: threading.Thread | None = None
        self.supervisor_said: str | None = None

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.api_port}"

    @property
    def workers(self) -> list[str]:
        return [f"{WORKER_PREFIX}{group.name}" for group in self.ctx.fleet.groups]

    def pid(self, name: str) -> int | None:
        record = pidfiles.read_pidfile(self.settings.run_dir, name)
        return record.pid if record and pidfiles.record_alive(record) else None

    def down(self) -> list[str]:
        return [name for name in self.workers if self.pid(name) is None]

    def rss_mb(self) -> float:
        """Resident memory of every worker and its pool's processes (psutil), in MB."""
        total = 0
        for name in self.workers:
            pid = self.pid(name)
            if pid is None:
                continue
            with contextlib.suppress(psutil.Error):
                main = psutil.Process(pid)
                for process in [main, *main.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += process.memory_info().rss
        return total / MB

    def supervise(self, log: Log) -> None:
        """Watch our fleet's children like a foreground ``switchyard up``: a worker that dies starts again."""
        if self.own is None:
            return
        settings, fleet = self.settings, self.ctx.fleet

        def revive(child: launcher.RunningService, why: str) -> launcher.RunningService:
            log(f"supervisor: {why}; starting it again")
            (new,) = launcher.up(settings, fleet, simulate=True, services={child.name}, on_event=lambda m: None)
            return new

        children = list(self.own.services.values())

        def watch() -> None:
            self.supervisor_said = supervise.supervise(children, self.stop_event, revive=revive)

        self.supervisor = threading.Thread(target=watch, name="stress-supervisor", daemon=True)
        self.supervisor.start()

    def stop(self, log: Log) -> None:
        self.stop_event.set()
        if self.supervisor is not None:
            self.supervisor.join(timeout=10)
        if self.own is not None:
            self.own.stop(log)


def simulator(fleet: Fleet, provider: str, body: dict[str, Any] | None = None) -> None:
    base = f"{fleet.settings.effective_simulator_url.rstrip('/')}/_sim/providers/{provider}"
    url, payload = (f"{base}/heal", None) if body is None else (base, body)
    httpx.post(url, json=payload, timeout=10).raise_for_status()


def set_latency(fleet: Fleet, latency_ms: int | None) -> None:
    for provider in fleet.ctx.fleet.providers:
        simulator(fleet, provider)  # back to the fleet file's latency, no fault
        if latency_ms is not None:
            simulator(fleet, provider, {"latency_ms": latency_ms})


class Chaos(threading.Thread):
    """The chaos phase's faults, beside the load: a worker ``kill -9``ed a fifth of the way in (the supervisor
    must start it again), then two providers failing half their calls for a third of the phase."""

    def __init__(self, fleet: Fleet, result: PhaseResult, seconds: float, log: Log) -> None:
        super().__init__(name="stress-chaos", daemon=True)
        self.fleet, self.result, self.seconds, self.log = fleet, result, seconds, log
        self.error: str | None = None

    def note(self, text: str) -> None:
        self.result.events.append(f"{time.strftime('%H:%M:%S')} {text}")
        self.log(f"  chaos: {text}")

    def run(self) -> None:
        try:
            time.sleep(self.seconds * 0.2)
            pid = self.fleet.pid(CHAOS_VICTIM)
            if pid is None:
                raise ServiceUnavailable(f"{CHAOS_VICTIM} was not running when the chaos phase meant to kill it")
            os.kill(pid, signal.SIGKILL)
            self.note(f"kill -9 {CHAOS_VICTIM} (pid {pid})")
            for provider, fault in CHAOS_FAULTS:
                simulator(self.fleet, provider, fault)
                self.note(f"{provider}: {fault['error_rate']:.0%} of calls fail with {fault['error_status']}")
            time.sleep(self.seconds * 0.35)
            for provider, _ in CHAOS_FAULTS:
                simulator(self.fleet, provider)
            self.note("providers healed")
            back = self.fleet.pid(CHAOS_VICTIM)
            self.note(f"{CHAOS_VICTIM} is {'back as pid ' + str(back) if back and back != pid else 'not back yet'}")
        except Exception as exc:  # noqa: BLE001 -- said in the phase's result, and fails its workers_down gate
            self.error = f"{type(exc).__name__}: {exc}"
            self.note(f"could not inject: {self.error}")


def roots_of(ctx: Context, tag: str, phase: str) -> list[tuple[str, datetime, datetime | None, str]]:
    """The tasks this run (``tag``) submitted in ``phase``: id, submitted, started, status."""
    with session_scope(ctx.database_url) as session:
        rows = session.execute(
            select(Task.id, Task.created_at, Task.started_at, Task.status).where(
                Task.title.like(f"stress {tag} {phase} %"), Task.parent_id.is_(None)
            )
        ).all()
    return [(r.id, r.created_at, r.started_at, r.status) for r in rows]


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def queue_waits(rows: Sequence[tuple[str, datetime, datetime | None, str]], now: datetime) -> list[float]:
    """Seconds each task waited for its first start (a task not started yet has waited until ``now``)."""
    return [max(0.0, ((_utc(s) if s else now) - _utc(c)).total_seconds()) for _, c, s, _status in rows]


def waiting(ctx: Context) -> dict[str, int]:
    """How many of the fleet's tasks are queued (or deferred) and running now."""
    with session_scope(ctx.database_url) as session:
        rows = session.execute(
            select(Task.status, func.count())
            .where(Task.status.in_(("queued", "deferred", "running")))
            .group_by(Task.status)
        ).all()
    return {status: count for status, count in rows}


def overspend_usd(ctx: Context) -> float:
    """The most any budget's current window holds beyond its cap (0 when every one is within)."""
    with session_scope(ctx.database_url) as session:
        rows = budget_status(session, ctx.fleet)
    return max((max(0, r["used_micros"] - r["cap_micros"]) for r in rows), default=0) / 1e6


def locust_command(plan: Path, api_url: str, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        api_url,
        "--csv",
        str(out / "locust"),
        "--only-summary",
        "--exit-code-on-error",
        "0",
        "--loglevel",
        "WARNING",
    ]


class Cycle:
    def __init__(self, options: Options, fleet: Fleet, work: Path, log: Log) -> None:
        self.options, self.fleet, self.work, self.log = options, fleet, work, log
        self.results = [PhaseResult(p) for p in options.phases]
        self.samples: list[Sample] = []
        self.failed: tuple[str, list[str]] | None = None
        self.chaos: Chaos | None = None
        self.events_path = work / "events.jsonl"
        self.stats_dir = options.out / "locust-phases"
        self.tag = uuid.uuid4().hex[:8]  # in every title: this run's tasks apart from any other's in the database

    def result(self, name: str) -> PhaseResult:
        return next(r for r in self.results if r.phase.name == name)

    def plan(self) -> Path:
        self.stats_dir.mkdir(parents=True, exist_ok=True)
        self.events_path.write_text("")
        plan = {
            "phases": [
                {"name": r.phase.name, "duration_s": r.duration(self.options.quick), **_load(r.phase)}
                for r in self.results
            ],
            "kinds": [list(k) for k in KINDS],
            "environments": list(self.fleet.ctx.fleet.environments.names),
            "branches": SAMPLE_BRANCHES,
            "tag": self.tag,
            "events": str(self.events_path),
            "stats_dir": str(self.stats_dir),
        }
        path = self.work / "plan.json"
        path.write_text(json.dumps(plan))
        return path

    def run(self) -> None:
        plan = self.plan()
        env = {**os.environ, "SWITCHYARD_STRESS_PLAN": str(plan)}
        with open(self.options.out / "locust.log", "wb") as out:
            process = subprocess.Popen(
                locust_command(plan, self.fleet.api_url, self.options.out),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.follow(process, plan)
        finally:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
        if process.returncode not in (0, -signal.SIGTERM) and self.failed is None:
            log_file = self.options.out / "locust.log"
            tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] if log_file.exists() else []
            self.failed = (
                "locust",
                [f"Locust exited with code {process.returncode}: {' '.join(tail)} (see {log_file})"],
            )
            self.log(f"Locust failed: {self.failed[1][0]}")
        self.drain()

    def follow(self, process: subprocess.Popen[bytes], plan: Path) -> None:
        current: PhaseResult | None = None
        seen, last_sample = 0, 0.0
        while True:
            lines = self.events_path.read_text().split("\n")[:-1]  # whole lines only (one may be half written)
            for line in lines[seen:]:
                event = json.loads(line)
                if current is not None:
                    self.end_phase(current, event["t"], stopped=bool(event.get("stopped")))
                    if self.failed and not event.get("stopped"):
                        plan.with_name("stop").write_text("a gate failed")
                current = None
                if event["phase"] is not None and not self.failed:
                    current = self.result(event["phase"])
                    self.start_phase(current, event["t"])
                elif event["phase"] is not None:
                    self.result(event["phase"]).state = "interrupted"
            seen = len(lines)
            if process.poll() is not None:
                if current is not None:  # Locust ended without saying so: count what was seen
                    self.end_phase(current, time.time(), stopped=True)
                return
            if current is not None and time.monotonic() - last_sample >= SAMPLE_S:
                last_sample = time.monotonic()
                self.sample(current)
            time.sleep(POLL_S)

    def start_phase(self, result: PhaseResult, at: float) -> None:
        phase = result.phase
        seconds = result.duration(self.options.quick)
        self.log(f"phase {phase.name}: {phase.rate:g} tasks/s, {phase.users} users, for {seconds:g} s")
        result.started, result.state = at, "running"
        set_latency(self.fleet, phase.latency_ms)
        result.rss_start_mb = self.fleet.rss_mb()
        if phase.chaos:
            self.chaos = Chaos(self.fleet, result, result.duration(self.options.quick), self.log)
            self.chaos.start()

    def sample(self, result: PhaseResult) -> None:
        started = result.started or time.time()
        counts = waiting(self.fleet.ctx)
        result.series.append(
            {
                "t": round(time.time() - started, 1),
                "queued": counts.get("queued", 0) + counts.get("deferred", 0),
                "running": counts.get("running", 0),
                "rss_mb": round(self.fleet.rss_mb(), 1),
            }
        )
        self.track()

    def track(self) -> None:
        ids = [i for r in self.results for i in r.root_ids]
        for r in self.results:
            if r.state == "running":
                ids += [row[0] for row in roots_of(self.fleet.ctx, self.tag, r.phase.name)]
        self.samples.append(Sample(time.monotonic(), observe.tracked(self.fleet.ctx, ids)))

    def end_phase(self, result: PhaseResult, at: float, *, stopped: bool) -> None:
        phase = result.phase
        result.ended = at
        if self.chaos is not None and result.phase.chaos:
            self.chaos.join(timeout=60)
            self.wait_workers(result)
        stats_file = self.stats_dir / f"{phase.name}.json"
        result.locust = json.loads(stats_file.read_text()) if stats_file.exists() else {}
        requests, failures = result.locust.get("requests", 0), result.locust.get("failures", 0)
        roots = roots_of(self.fleet.ctx, self.tag, phase.name)
        result.root_ids = [row[0] for row in roots]
        waits = queue_waits(roots, datetime.now(UTC))
        p95_wait = percentile(waits, 0.95)
        rss = self.fleet.rss_mb()
        result.measured = {
            "error_rate": round(failures / requests, 4) if requests else None,
            "p95_submit_ms": result.locust.get("p95_ms"),
            "p95_queue_wait_s": None if p95_wait is None else round(p95_wait, 2),
            "rss_growth_mb": None if result.rss_start_mb is None else round(rss - result.rss_start_mb, 1),
            "overspend_usd": overspend_usd(self.fleet.ctx),
            "workers_down": len(self.fleet.down()) + (1 if self.chaos and phase.chaos and self.chaos.error else 0),
            "lost": None,  # counted once the cycle has drained
            "submitted": requests,
            "tasks": len(roots),
        }
        if stopped:
            result.state = "interrupted"
            self.log(f"phase {phase.name}: interrupted")
            return
        result.failed = failed_gates(phase.gates, result.measured)
        result.state = "failed" if result.failed else "passed"
        shown = {k: v for k, v in result.measured.items() if v is not None}
        self.log(f"phase {phase.name}: {result.state} {shown}")
        if result.failed and self.failed is None:
            self.failed = (phase.name, result.failed)
            self.log(f"gate failed in phase {phase.name}: {'; '.join(result.failed)}; stopping the cycle")

    def wait_workers(self, result: PhaseResult) -> None:
        """After the chaos phase: give the supervisor its chance to bring the killed worker back."""
        deadline = time.monotonic() + 60
        while self.fleet.down() and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if self.fleet.down() and self.fleet.own is None:
            result.events.append(
                f"not running: {', '.join(self.fleet.down())}; nothing started it again (a fleet started with "
                "`up --detach` has no supervisor: run `switchyard up --simulate` in the foreground for --attach)"
            )
        if self.fleet.supervisor_said:
            result.events.append(f"supervisor: {self.fleet.supervisor_said}")

    def drain(self) -> None:
        """Wait for every task of the cycle to settle (or the drain deadline), then count the lost per phase."""
        ran = [r for r in self.results if r.state in ("passed", "failed", "interrupted")]
        for r in ran:
            r.root_ids = [row[0] for row in roots_of(self.fleet.ctx, self.tag, r.phase.name)]
        deadline = time.monotonic() + DRAIN_S[self.options.quick]
        self.log(f"waiting up to {DRAIN_S[self.options.quick]:.0f} s for the cycle's tasks to settle")
        while True:
            self.track()
            sample = self.samples[-1]
            if all(status in verdict.TERMINAL for status, _ in sample.tasks.values()):
                rows = observe.task_rows(self.fleet.ctx, sample.tasks)
                if not verdict.missing_follow_ups(rows, follow_up_id):
                    break
            if time.monotonic() > deadline:
                break
            time.sleep(SAMPLE_S)
        for r in ran:
            tree = observe.tracked(self.fleet.ctx, r.root_ids)
            rows = observe.task_rows(self.fleet.ctx, tree)
            lost = verdict.lost(r.root_ids, rows, self.samples, follow_up_id)
            r.measured["lost"] = len(lost)
            r.measured["failed_tasks"] = sum(
                1 for t in rows if t.status in verdict.TERMINAL and t.status != "succeeded"
            )
            if r.state in ("passed", "failed") and len(lost) > r.phase.gates.lost:
                r.failed.append(f"lost: {len(lost)} > {r.phase.gates.lost}")
                r.state = "failed"
        if self.failed is None:
            first = next((r for r in self.results if r.state == "failed"), None)
            if first is not None:
                self.failed = (first.phase.name, first.failed)
                self.log(f"gate failed in phase {first.phase.name}: {'; '.join(first.failed)}")


def _load(phase: Phase) -> dict[str, Any]:
    return {"rate": phase.rate, "users": phase.users}


def report(cycle: Cycle, *, started: float, wall_s: float) -> dict[str, Any]:
    failed = cycle.failed
    return {
        "quick": cycle.options.quick,
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "wall_s": round(wall_s, 1),
        "ok": failed is None and all(r.state == "passed" for r in cycle.results),
        "failed": None if failed is None else {"phase": failed[0], "gates": failed[1]},
        "machine": {"cpus": os.cpu_count(), "load_average": list(os.getloadavg())},
        "kinds": dict(KINDS),
        "phases": [
            {
                "name": r.phase.name,
                "state": r.state,
                "seed": r.phase.seed,
                "duration_s": r.duration(cycle.options.quick),
                "rate": r.phase.rate,
                "users": r.phase.users,
                "latency_ms": r.phase.latency_ms,
                "chaos": r.phase.chaos,
                "gates": asdict(r.phase.gates),
                "measured": r.measured,
                "failed": r.failed,
                "events": r.events,
                "series": r.series,
                "locust": {
                    k: v
                    for k, v in r.locust.items()
                    if k in ("requests", "failures", "p50_ms", "p95_ms", "max_ms", "rps", "history", "errors")
                },
            }
            for r in cycle.results
        ],
    }


def open_fleet(options: Options, home: Path, log: Log) -> Fleet:
    if options.attach:
        ctx = build_context(load_settings())
        fleet = Fleet(ctx, None)
        try:
            httpx.get(f"{fleet.api_url}/api/status", timeout=5)
        except httpx.TransportError:
            raise ServiceUnavailable(
                f"--attach: the status API does not answer at {fleet.api_url}; start the fleet with "
                "`switchyard up --simulate` (the cycle sets the simulator's latency and faults)"
            ) from None
        return fleet
    settings = chaos_settings(home, database_url=options.database_url, broker_url=None)
    log(f"starting a fleet in {settings.data_dir} (API on port {settings.api_port})")
    own = start_fleet(
        settings,
        log=lambda m: log(f"  {m}"),
        ready_timeout_s=READY_TIMEOUT_S,
        extra=frozenset({"api"}),
        open_caps=False,
    )
    fleet = Fleet(own.ctx, own)
    fleet.supervise(log)
    return fleet


def run(options: Options, log: Log) -> dict[str, Any]:
    """The whole cycle; the report (also written to ``options.out``). Everything started is stopped."""
    if not options.phases:
        raise InputError("no phases to run")
    options.out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="switchyard-stress-"))
    started, clock = time.time(), time.monotonic()
    previous = signal.signal(signal.SIGTERM, _exit_on_term)
    fleet: Fleet | None = None
    try:
        fleet = open_fleet(options, home / "fleet", log)
        cycle = Cycle(options, fleet, home, log)
        try:
            cycle.run()
        finally:
            with contextlib.suppress(Exception):
                set_latency(fleet, None)
    finally:
        if fleet is not None:
            log("stopping the fleet")
            fleet.stop(lambda m: log(f"  {m}"))
        signal.signal(signal.SIGTERM, previous)
        if options.keep:
            log(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    data = report(cycle, started=started, wall_s=time.monotonic() - clock)
    write_report(data, options.out)
    return data


def write_report(data: dict[str, Any], out: Path) -> None:
    (out / "stress.json").write_text(json.dumps(data, indent=2, default=str))
    (out / "stress.html").write_text(html_page(data))


def _exit_on_term(_signum: int, _frame: object) -> None:
    raise SystemExit(143)  # unwinds through every `finally`, which stops what was started


COLUMNS = (
    "phase",
    "state",
    "tasks/s",
    "users",
    "submitted",
    "err %",
    "p95 submit ms",
    "p95 wait s",
    "RSS +MB",
    "overspend $",
    "lost",
    "failed gate",
)


def table(data: dict[str, Any]) -> str:
    rows = [list(COLUMNS)]
    for p in data["phases"]:
        m = p["measured"]

        def cell(key: str, scale: float = 1.0, digits: int = 1, m: dict[str, Any] = m) -> str:
            value = m.get(key)
            return "-" if value is None else f"{value * scale:.{digits}f}"

        rows.append(
            [
                p["name"],
                p["state"],
                f"{p['rate']:g}",
                str(p["users"]),
                str(m.get("submitted", "-")),
                cell("error_rate", 100),
                cell("p95_submit_ms", digits=0),
                cell("p95_queue_wait_s"),
                cell("rss_growth_mb"),
                cell("overspend_usd", digits=2),
                str(m.get("lost", "-") if m.get("lost") is not None else "-"),
                "; ".join(p["failed"]) or "",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip() for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])
