"""What routing adds to a provider call: Switchyard's router against a direct SDK call and LiteLLM's Router.

    python bench/router.py [--calls 300] [--redis-url redis://127.0.0.1:6379/12] [--database-url sqlite:///…]

Starts the provider simulator in its own process (no added latency), then three contenders, each in a
process of its own, taking turns of 20 calls so that machine noise hits all alike (the ones waiting for their
turn are stopped with SIGSTOP, so their threads take no CPU from the one measured):

- **direct**: the official ``anthropic`` SDK calling the simulator (one client, reused), in a process that
  runs nothing else: the baseline;
- **switchyard**: the same call through the router: choose (breaker and limit snapshot from Redis, budgets
  from SQL), the atomic hold, a breaker permit per try, the call, the settle. Its added latency is measured
  around the call (total minus the call itself), and also as total minus the baseline;
- **litellm**: ``litellm.Router`` with the same models and fallback (Claude → Ollama), calling the same
  simulator; its added latency is its total minus the baseline (it gives no inner timing). LiteLLM runs
  threads of its own, which slow every call in its process: a direct call made there is slower than the
  baseline, and LiteLLM's total minus that call is printed too, as the figure least favourable to Switchyard.

The switchyard and litellm contenders make a direct call before every routed one too, so every process does
the same work between measurements. Prints p50 and p99 of each and the ratios, then where
Switchyard's added time goes, step by step, from an instrumented attempt made after each measured one: there
the ledger, breakers and router are subclassed only to time their calls (snapshot, hold, settle; the permit
and the verdict, each sent to Redis and read apart); the pure choice, the host checks and the retry loop are
what is left of the spans around them. The headline figures come from the plain objects, without stopwatches.
Target (issue 3): Switchyard's added p50 under 1 ms and under a third of LiteLLM's. LiteLLM is an
optional extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from providers.base import ProviderRequest  # noqa: E402 -- after the path setup, so the bench runs from a checkout
from providers.claude import ClaudeProvider  # noqa: E402
from routing.breaker import Breakers  # noqa: E402
from routing.guard import guarded_call  # noqa: E402
from routing.ledger import Ledger  # noqa: E402
from routing.route import Route, RouteRequest  # noqa: E402
from routing.router import Place, Router  # noqa: E402
from routing.state import connect_state, record_transition  # noqa: E402
from store.db import session_scope  # noqa: E402
from store.migrate import upgrade  # noqa: E402
from store.repo import create_task  # noqa: E402
from switchyard.fleet import load_fleet  # noqa: E402
from switchyard.settings import Settings  # noqa: E402

PROMPT = "Review this change:\n```diff\n+def health():\n+    return 'ok'\n```\n"
SYSTEM = "You are a careful code reviewer working in a Switchyard fleet.\nTask kind: pr_review\n"
MODEL = "claude-sonnet-5"
REQUEST = RouteRequest("pr_review", "pr_review", "dev1", "dev", len(SYSTEM) + len(PROMPT))
T = TypeVar("T")


def start_simulator(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator.server", "--port", str(port), "--fleet", str(ROOT / "switchyard.toml")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{url}/_sim/health", timeout=0.5).raise_for_status()
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    for name in ("claude", "codex", "ollama"):
        httpx.post(f"{url}/_sim/providers/{name}", json={"latency_ms": 0, "error_rate": 0.0}).raise_for_status()
    return proc


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stopwatch:
    """Seconds spent per step of one attempt, summed when a step runs more than once (the guard's tries)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def add(self, step: str, seconds: float) -> None:
        self.spent[step] = self.spent.get(step, 0.0) + seconds

    def time(self, step: str, fn: Callable[[], T]) -> T:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self.add(step, time.perf_counter() - t0)


class TimedLedger(Ledger):
    """The real ledger, timing each call it gets (the router's hold, the attempt's settle)."""

    watch = Stopwatch()

    def hold(self, **hold: Any) -> Any:
        return self.watch.time("hold (SQL)", lambda: super(TimedLedger, self).hold(**hold))

    def settle(self, **settle: Any) -> None:
        self.watch.time("settle (SQL)", lambda: super(TimedLedger, self).settle(**settle))


class TimedBreakers(Breakers):
    """The real shared breakers, timing the router's snapshot and the permit and verdict of the call: each is
    sent to Redis and its answer read later (:mod:`routing.sent`), so sending and reading are timed apart."""

    watch = Stopwatch()
    flushing = False

    def snapshot(self, providers: Any) -> Any:
        return self.watch.time("breaker snapshot (Redis)", lambda: super(TimedBreakers, self).snapshot(providers))

    def request(self, provider: str) -> Any:
        return self.watch.time("permit sent (Redis)", lambda: super(TimedBreakers, self).request(provider))

    def send_success(self, permit: Any) -> None:
        self.watch.time("verdict sent (Redis)", lambda: super(TimedBreakers, self).send_success(permit))

    def flush(self) -> None:
        if not self._unread():
            return
        self.flushing = True
        try:
            self.watch.time("verdict read (Redis)", super().flush)
        finally:
            self.flushing = False

    def _answer(self, provider: str, sent: Any) -> Any:
        if self.flushing:
            return super()._answer(provider, sent)
        return self.watch.time("permit read (Redis)", lambda: super(TimedBreakers, self)._answer(provider, sent))


class TimedRouter(Router):
    watch = Stopwatch()

    def provider_states(self, names: Any) -> Any:
        return self.watch.time("provider states", lambda: super(TimedRouter, self).provider_states(names))

    def budget_states(self, request: RouteRequest) -> Any:
        return self.watch.time("budget snapshot", lambda: super(TimedRouter, self).budget_states(request))


STEPS = (  # in the order an attempt runs them; the unmeasured ones are what is left of the spans around them
    "breaker snapshot (Redis)",
    "host checks (keys, CLIs)",
    "budget snapshot (cached 1 s)",
    "choose (pure)",
    "permit sent (Redis)",
    "hold (SQL)",
    "permit read (Redis)",
    "retry loop (tenacity)",
    "verdict sent (Redis)",
    "settle (SQL)",
    "verdict read (Redis)",
    "rest (request, bookkeeping)",
)


class Switchyard:
    """The router's per-attempt work around one Claude call, as the attempt loop does it.

    Two copies share the database and Redis: the real ledger, breakers and router, for the figures, and the
    timing subclasses, for the breakdown (their stopwatches would add to the figures they measure)."""

    def __init__(self, settings: Settings, database_url: str, redis_url: str) -> None:
        self.fleet = load_fleet(ROOT / "switchyard.toml", "development")
        upgrade(database_url)
        self.watch = Stopwatch()
        TimedLedger.watch = TimedBreakers.watch = TimedRouter.watch = self.watch
        record = functools.partial(record_transition, database_url)
        self.ledger = Ledger(database_url, self.fleet)
        self.breakers = Breakers.from_fleet(connect_state(redis_url), self.fleet, on_transition=record)
        self.router = Router(settings, self.fleet, self.ledger, self.breakers)
        self.timed_ledger = TimedLedger(database_url, self.fleet)
        self.timed_breakers = TimedBreakers.from_fleet(connect_state(redis_url), self.fleet, on_transition=record)
        self.timed_router = TimedRouter(settings, self.fleet, self.timed_ledger, self.timed_breakers)
        for name in self.fleet.providers:
            self.breakers.reset(name)
        self.provider = ClaudeProvider(base_url=settings.effective_simulator_url, api_key="bench", timeout=30)
        self.database_url = database_url

    def new_task(self) -> str:
        task_id = str(uuid.uuid4())
        with session_scope(self.database_url) as session:
            create_task(
                session,
                task_id=task_id,
                kind="pr_review",
                group="pr_review",
                environment="dev1",
                stage="dev",
                title="bench",
                payload={"kind": "pr_review", "environment": "dev1", "branch": "b"},
            )
        return task_id

    def attempt(self, task_id: str) -> tuple[float, float]:
        """(total seconds, seconds inside the provider call) of one routed attempt, on the real objects."""
        inside = [0.0]

        def call() -> Any:
            t0 = time.perf_counter()
            try:
                return self.provider.call(
                    ProviderRequest(model=route.model, system=SYSTEM, prompt=PROMPT, max_output_tokens=256)
                )
            finally:
                inside[0] = time.perf_counter() - t0

        started = time.perf_counter()
        route = self.router.route(REQUEST, Place(task_id, 1, "pr_review", "dev1", "dev"))
        assert isinstance(route, Route), route
        guarded_call(self.breakers, route.provider, call, self.fleet.retry, permit=route.permit)
        self.ledger.settle(task_id=task_id, attempt=1, charged_micros=1000, price_version="bench")
        self.breakers.flush()
        return time.perf_counter() - started, inside[0]

    def timed_attempt(self, task_id: str) -> dict[str, float]:
        """Seconds per step of one routed attempt, on the timing subclasses (see :data:`STEPS`)."""
        self.watch.spent = {}
        watch = self.watch
        started = time.perf_counter()
        place = Place(task_id, 2, "pr_review", "dev1", "dev")
        route = watch.time("route", lambda: self.timed_router.route(REQUEST, place))
        assert isinstance(route, Route), route
        call = ProviderRequest(model=route.model, system=SYSTEM, prompt=PROMPT, max_output_tokens=256)
        timed = functools.partial(watch.time, "call", functools.partial(self.provider.call, call))
        guard = functools.partial(guarded_call, self.timed_breakers, route.provider, timed, self.fleet.retry)
        watch.time("guard", functools.partial(guard, permit=route.permit))
        self.timed_ledger.settle(task_id=task_id, attempt=2, charged_micros=1000, price_version="bench")
        self.timed_breakers.flush()
        return steps_of(watch.spent, time.perf_counter() - started)


def steps_of(spent: dict[str, float], total: float) -> dict[str, float]:
    """Every step of :data:`STEPS`, the derived ones computed from the spans they are left of."""
    steps = {step: spent.get(step, 0.0) for step in STEPS}
    measured_in_route = ("budget snapshot (cached 1 s)", "permit sent (Redis)", "hold (SQL)")
    steps["host checks (keys, CLIs)"] = spent.get("provider states", 0.0) - steps["breaker snapshot (Redis)"]
    steps["choose (pure)"] = (
        spent["route"] - spent.get("provider states", 0.0) - sum(steps[step] for step in measured_in_route)
    )
    in_guard = ("permit read (Redis)", "verdict sent (Redis)")
    steps["retry loop (tenacity)"] = spent["guard"] - spent["call"] - sum(steps[step] for step in in_guard)
    steps["rest (request, bookkeeping)"] = 0.0
    steps["rest (request, bookkeeping)"] = total - spent["call"] - sum(steps.values())
    return steps


def litellm_router(url: str) -> Callable[[], Any]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the price map from the internet
    import litellm  # noqa: PLC0415 -- optional extra, imported only when benchmarked

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    router = litellm.Router(
        model_list=[
            {
                "model_name": "pr_review",
                "litellm_params": {"model": f"anthropic/{MODEL}", "api_base": url, "api_key": "x"},
            },
            {
                "model_name": "pr_review-free",
                "litellm_params": {"model": "ollama_chat/qwen2.5-coder:7b", "api_base": url},
            },
        ],
        fallbacks=[{"pr_review": ["pr_review-free"]}],
        num_retries=0,
    )
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    return lambda: router.completion(model="pr_review", messages=messages, max_tokens=256)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


BLOCK = 20  # calls a contender makes before the other takes its turn


def contender(conn: Connection, role: str, where: dict[str, str]) -> None:
    """One contender in its own interpreter: each turn, ``n`` pairs of (direct SDK call, routed call), timed;
    the ``direct`` contender makes a direct call in both places (the baseline, from a process that runs
    nothing else)."""
    url, redis_url = where["simulator"], where["redis"]
    direct_client = anthropic.Anthropic(base_url=url, api_key="bench", max_retries=0)

    def direct() -> None:
        direct_client.messages.create(
            model=MODEL, max_tokens=256, system=SYSTEM, messages=[{"role": "user", "content": PROMPT}]
        )

    ours, lite = None, None
    if role == "switchyard":
        settings = Settings(simulate=True, simulator_url=url, home=Path(where["home"]), state_url=redis_url)
        ours = Switchyard(settings, where["database"], redis_url)
    elif role == "litellm":
        lite = litellm_router(url)
    conn.send("ready")
    while (n := conn.recv()) > 0:
        rows: list[dict[str, Any]] = []
        tasks = [ours.new_task() for _ in range(n)] if ours is not None else [""] * n
        for task_id in tasks:
            t0 = time.perf_counter()
            direct()
            row: dict[str, Any] = {"direct": time.perf_counter() - t0}
            if ours is not None:
                row["total"], inner = ours.attempt(task_id)
                row["added"] = row["total"] - inner
                row["steps"] = ours.timed_attempt(task_id)
            else:
                t0 = time.perf_counter()
                (lite or direct)()
                row["total"] = time.perf_counter() - t0
            rows.append(row)
        conn.send(rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300, help="measured calls per contender")
    parser.add_argument("--warmup", type=int, default=20, help="calls per contender before measuring")
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/12", help="the breakers' Redis (their keys are reset)"
    )
    parser.add_argument("--database-url", default=None, help="the ledger; default: SQLite in a temporary directory")
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out (it is an optional extra)")
    args = parser.parse_args()

    port = free_port()
    sim = start_simulator(port)
    tmp = tempfile.TemporaryDirectory()
    spawn = multiprocessing.get_context("spawn")
    roles = ["direct", "switchyard"] + ([] if args.no_litellm else ["litellm"])
    procs: dict[str, tuple[Any, Connection]] = {}
    try:
        url = f"http://127.0.0.1:{port}"
        database_url = args.database_url or f"sqlite:///{tmp.name}/bench.db"
        for role in roles:
            ours, theirs = spawn.Pipe()
            where = {"simulator": url, "redis": args.redis_url, "database": database_url, "home": tmp.name}
            proc = spawn.Process(target=contender, args=(theirs, role, where))
            proc.start()
            procs[role] = (proc, ours)
        for role in roles:
            if procs[role][1].recv() != "ready":
                raise RuntimeError(f"the {role} contender did not start")
            os.kill(procs[role][0].pid, signal.SIGSTOP)
        rows: dict[str, list[dict[str, Any]]] = {role: [] for role in roles}
        for role in roles:  # warm-up: connections, caches, the first-call imports
            turn(procs[role], args.warmup)
        while len(rows[roles[0]]) < args.calls:  # turns of BLOCK calls, so machine noise hits all alike
            for role in roles:
                rows[role].extend(turn(procs[role], min(BLOCK, args.calls - len(rows[role]))))
        report(rows, args.calls, database_url.split(":")[0])
    finally:
        for proc, conn in procs.values():
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGCONT)
                conn.send(0)
            proc.join(30)
        sim.terminate()
        sim.wait(10)
        tmp.cleanup()
    return 0


def turn(proc: tuple[Any, Connection], calls: int) -> list[dict[str, Any]]:
    """One contender's turn: woken, ``calls`` timed pairs, stopped again. A contender waiting for its turn is
    stopped (SIGSTOP) so that its threads (LiteLLM keeps some running) take no CPU from the other's turn."""
    process, conn = proc
    os.kill(process.pid, signal.SIGCONT)
    conn.send(calls)
    rows: list[dict[str, Any]] = conn.recv()
    os.kill(process.pid, signal.SIGSTOP)
    return rows


def report(rows: dict[str, list[dict[str, Any]]], calls: int, database: str) -> None:
    ms = 1000.0
    baseline = [t for row in rows["direct"] for t in (row["direct"], row["total"])]
    base50, base99 = pct(baseline, 0.5), pct(baseline, 0.99)
    ours = rows["switchyard"]
    added = [row["added"] for row in ours]
    total = [row["total"] for row in ours]
    print(f"calls: {calls} per contender, each in its own process, in turns of {BLOCK}; ledger on {database}")
    print(f"{'':46} {'p50 ms':>9} {'p99 ms':>9}")
    line("direct SDK call (baseline, its own process)", baseline)
    line("switchyard total", total)
    line("switchyard added (measured inside)", added)
    gap50, gap99 = pct(total, 0.5) - base50, pct(total, 0.99) - base99
    print(f"{'switchyard added (total - baseline)':46} {gap50 * ms:9.3f} {gap99 * ms:9.3f}")
    ours50 = pct(added, 0.5)
    if "litellm" in rows:
        theirs = rows["litellm"]
        lite_total = [row["total"] for row in theirs]
        lite_direct = [row["direct"] for row in theirs]
        line("litellm Router total", lite_total)
        lite50, lite99 = pct(lite_total, 0.5) - base50, pct(lite_total, 0.99) - base99
        print(f"{'litellm added (total - baseline)':46} {lite50 * ms:9.3f} {lite99 * ms:9.3f}")
        line("direct SDK call in litellm's process", lite_direct)
        own50 = pct(lite_total, 0.5) - pct(lite_direct, 0.5)
        print(f"{'litellm added (total - its process direct)':46} {own50 * ms:9.3f}")
        if lite50 > 0 and own50 > 0:
            print("switchyard added / litellm added at p50 (target < 0.333):")
            print(f"  both as total - baseline (the same measure for both): {gap50 / lite50:.3f}")
            print(f"  switchyard's measured inside: {ours50 / lite50:.3f}")
            print(f"  switchyard's measured inside, litellm's against its process's direct call: {ours50 / own50:.3f}")
    verdict = "meets" if ours50 * ms < 1.0 else "misses"
    mean = statistics.mean(added) * ms
    print(f"switchyard added p50 {ours50 * ms:.3f} ms {verdict} the 1 ms target (mean {mean:.3f} ms)")
    report_steps({step: [row["steps"][step] for row in ours] for step in STEPS}, added)


def line(name: str, values: list[float]) -> None:
    print(f"{name:46} {pct(values, 0.5) * 1000:9.3f} {pct(values, 0.99) * 1000:9.3f}")


def report_steps(steps: dict[str, list[float]], added: list[float]) -> None:
    """Where switchyard's added time goes, per step of the attempt (p50 and p99 of each, in microseconds)."""
    us = 1e6
    print(f"\nswitchyard added time per step, in the instrumented attempts {'p50 us':>9} {'p99 us':>9}")
    for step, values in steps.items():
        print(f"  {step:57} {pct(values, 0.5) * us:9.1f} {pct(values, 0.99) * us:9.1f}")
    total = sum(pct(values, 0.5) for values in steps.values())
    print(f"  {'sum of the step p50s (stopwatches included)':57} {total * us:9.1f}")
    print(f"  {'added, p50 of the measured attempts (no stopwatches)':57} {pct(added, 0.5) * us:9.1f}")


if __name__ == "__main__":
    sys.exit(main())
