"""What routing adds to a provider call: Switchyard's router against a direct SDK call and LiteLLM's Router.

    python bench/router.py [--calls 300] [--redis-url redis://127.0.0.1:6379/12] [--database-url sqlite:///…]

Starts the provider simulator in its own process (no added latency), then runs, interleaved call by call
so machine noise hits all three alike:

- **direct**: the official ``anthropic`` SDK calling the simulator (one client, reused): the baseline;
- **switchyard**: the same call through the router: choose (breaker and limit snapshot from Redis, budgets
  from SQL), the atomic hold, a breaker permit per try, the call, the settle. Its added latency is measured
  around the call (total minus the call itself), and also as total minus the direct baseline;
- **litellm**: ``litellm.Router`` with the same models and fallback (Claude → Ollama), calling the same
  simulator; its added latency is its total minus the direct baseline (LiteLLM gives no inner timing).

Prints p50 and p99 of each and the ratios, then where Switchyard's added time goes, step by step, in the same
attempts: the real ledger, breakers and router are subclassed only to time their calls (snapshot, hold,
acquire, verdict, settle); the pure choice, the host checks and the retry loop are what is left of the spans
around them. Target (issue 3): Switchyard's added p50 under 1 ms and under a third of LiteLLM's. LiteLLM is an
optional extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
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
T = TypeVar("T")


def start_simulator(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "providers.simulator", "--port", str(port), "--fleet", str(ROOT / "switchyard.toml")],
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
    """The real shared breakers, timing the router's snapshot and the guard's permit and verdict."""

    watch = Stopwatch()

    def snapshot(self, providers: Any) -> Any:
        return self.watch.time("breaker snapshot (Redis)", lambda: super(TimedBreakers, self).snapshot(providers))

    def acquire(self, provider: str) -> Any:
        return self.watch.time("breaker acquire (Redis)", lambda: super(TimedBreakers, self).acquire(provider))

    def success(self, permit: Any) -> None:
        self.watch.time("breaker verdict (Redis)", lambda: super(TimedBreakers, self).success(permit))


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
    "hold (SQL)",
    "breaker acquire (Redis)",
    "breaker verdict (Redis)",
    "retry loop (tenacity)",
    "settle (SQL)",
    "rest (request, bookkeeping)",
)


class Switchyard:
    """The router's per-attempt work around one Claude call, as the attempt loop does it."""

    def __init__(self, settings: Settings, database_url: str, redis_url: str) -> None:
        self.fleet = load_fleet(ROOT / "switchyard.toml", "development")
        upgrade(database_url)
        self.watch = Stopwatch()
        TimedLedger.watch = TimedBreakers.watch = TimedRouter.watch = self.watch
        self.ledger = TimedLedger(database_url, self.fleet)
        record = functools.partial(record_transition, database_url)
        self.breakers = TimedBreakers.from_fleet(connect_state(redis_url), self.fleet, on_transition=record)
        for name in self.fleet.providers:
            self.breakers.reset(name)
        self.router = TimedRouter(settings, self.fleet, self.ledger, self.breakers)
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

    def attempt(self, task_id: str) -> tuple[float, float, dict[str, float]]:
        """(total seconds, seconds inside the provider call, seconds per step) for one routed attempt."""
        self.watch.spent = {}
        watch = self.watch
        request = RouteRequest("pr_review", "pr_review", "dev1", "dev", len(SYSTEM) + len(PROMPT))
        started = time.perf_counter()
        route = watch.time("route", lambda: self.router.route(request, Place(task_id, 1, "pr_review", "dev1", "dev")))
        assert isinstance(route, Route), route
        call = ProviderRequest(model=route.model, system=SYSTEM, prompt=PROMPT, max_output_tokens=256)
        timed = functools.partial(watch.time, "call", functools.partial(self.provider.call, call))
        watch.time("guard", lambda: guarded_call(self.breakers, route.provider, timed, self.fleet.retry))
        self.ledger.settle(task_id=task_id, attempt=1, charged_micros=1000, price_version="bench")
        total = time.perf_counter() - started
        return total, watch.spent["call"], steps_of(watch.spent, total)


def steps_of(spent: dict[str, float], total: float) -> dict[str, float]:
    """Every step of :data:`STEPS`, the derived ones computed from the spans they are left of."""
    got = spent
    snapshot, states = got.get("breaker snapshot (Redis)", 0.0), got.get("provider states", 0.0)
    budgets, hold = got.get("budget snapshot", 0.0), got.get("hold (SQL)", 0.0)
    acquire, verdict = got.get("breaker acquire (Redis)", 0.0), got.get("breaker verdict (Redis)", 0.0)
    settle = got.get("settle (SQL)", 0.0)
    steps = {
        "breaker snapshot (Redis)": snapshot,
        "host checks (keys, CLIs)": states - snapshot,
        "budget snapshot (cached 1 s)": budgets,
        "choose (pure)": got["route"] - states - budgets - hold,
        "hold (SQL)": hold,
        "breaker acquire (Redis)": acquire,
        "breaker verdict (Redis)": verdict,
        "retry loop (tenacity)": got["guard"] - got["call"] - acquire - verdict,
        "settle (SQL)": settle,
    }
    steps["rest (request, bookkeeping)"] = total - got["call"] - sum(steps.values())
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary directory")
    parser.add_argument("--no-litellm", action="store_true")
    args = parser.parse_args()

    port = free_port()
    sim = start_simulator(port)
    tmp = tempfile.TemporaryDirectory()
    try:
        url = f"http://127.0.0.1:{port}"
        database_url = args.database_url or f"sqlite:///{tmp.name}/bench.db"
        settings = Settings(simulate=True, simulator_url=url, home=Path(tmp.name), state_url=args.redis_url)
        ours = Switchyard(settings, database_url, args.redis_url)
        direct_client = anthropic.Anthropic(base_url=url, api_key="bench", max_retries=0)
        lite = None if args.no_litellm else litellm_router(url)

        def direct() -> None:
            direct_client.messages.create(
                model=MODEL, max_tokens=256, system=SYSTEM, messages=[{"role": "user", "content": PROMPT}]
            )

        results: dict[str, list[float]] = {"direct": [], "switchyard": [], "switchyard_inner": [], "litellm": []}
        steps: dict[str, list[float]] = {step: [] for step in STEPS}
        tasks = [ours.new_task() for _ in range(args.calls + args.warmup)]
        for i, task_id in enumerate(tasks):
            t0 = time.perf_counter()
            direct()
            d = time.perf_counter() - t0
            total, inner, spent = ours.attempt(task_id)
            lt = 0.0
            if lite is not None:
                t0 = time.perf_counter()
                lite()
                lt = time.perf_counter() - t0
            if i >= args.warmup:
                results["direct"].append(d)
                results["switchyard"].append(total)
                results["switchyard_inner"].append(total - inner)
                results["litellm"].append(lt)
                for step, seconds in spent.items():
                    steps[step].append(seconds)
        report(results, lite is not None, args.calls, database_url.split(":")[0])
        report_steps(steps, results["switchyard_inner"])
    finally:
        sim.terminate()
        sim.wait(10)
        tmp.cleanup()
    return 0


def report(results: dict[str, list[float]], with_litellm: bool, calls: int, database: str) -> None:
    ms = 1000.0
    base50, base99 = pct(results["direct"], 0.5), pct(results["direct"], 0.99)
    print(f"calls: {calls} each, interleaved; ledger on {database}; simulator with no added latency")
    print(f"{'':34} {'p50 ms':>9} {'p99 ms':>9}")
    print(f"{'direct SDK call (baseline)':34} {base50 * ms:9.3f} {base99 * ms:9.3f}")
    rows = [("switchyard total", results["switchyard"])]
    if with_litellm:
        rows.append(("litellm Router total", results["litellm"]))
    for name, values in rows:
        print(f"{name:34} {pct(values, 0.5) * ms:9.3f} {pct(values, 0.99) * ms:9.3f}")
    inner50, inner99 = pct(results["switchyard_inner"], 0.5), pct(results["switchyard_inner"], 0.99)
    print(f"{'switchyard added (measured inside)':34} {inner50 * ms:9.3f} {inner99 * ms:9.3f}")
    ours50 = pct(results["switchyard"], 0.5) - base50
    ours99 = pct(results["switchyard"], 0.99) - base99
    print(f"{'switchyard added (total - direct)':34} {ours50 * ms:9.3f} {ours99 * ms:9.3f}")
    print(f"switchyard total / direct at p50: {pct(results['switchyard'], 0.5) / base50:.2f}x")
    if with_litellm:
        lite50 = pct(results["litellm"], 0.5) - base50
        lite99 = pct(results["litellm"], 0.99) - base99
        print(f"{'litellm added (total - direct)':34} {lite50 * ms:9.3f} {lite99 * ms:9.3f}")
        print(f"litellm total / direct at p50: {pct(results['litellm'], 0.5) / base50:.2f}x")
        if lite50 > 0:
            print(f"switchyard added / litellm added at p50: {inner50 / lite50:.3f} (target < 0.333)")
    verdict = "meets" if inner50 * ms < 1.0 else "misses"
    mean = statistics.mean(results["switchyard_inner"]) * ms
    print(f"switchyard added p50 {inner50 * ms:.3f} ms {verdict} the 1 ms target (mean {mean:.3f} ms)")


def report_steps(steps: dict[str, list[float]], added: list[float]) -> None:
    """Where switchyard's added time goes, per step of the attempt (p50 and p99 of each, in microseconds)."""
    us = 1e6
    print(f"\nswitchyard added time per step (same attempts) {'p50 us':>9} {'p99 us':>9}")
    for step, values in steps.items():
        print(f"  {step:44} {pct(values, 0.5) * us:9.1f} {pct(values, 0.99) * us:9.1f}")
    total = sum(pct(values, 0.5) for values in steps.values())
    print(f"  {'sum of the step p50s':44} {total * us:9.1f}")
    print(f"  {'added, p50 of the attempts':44} {pct(added, 0.5) * us:9.1f}")


if __name__ == "__main__":
    sys.exit(main())
