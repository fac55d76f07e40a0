"""The breaker is shared: two separate OS processes call Claude through the simulator under one Redis breaker.

After the threshold both stop calling; after the open interval exactly one probe goes out in total; when the
simulator heals, the probe closes the breaker and both processes' traffic returns.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from conftest import REPO, Processes

from routing.breaker import Breakers
from routing.permits import BreakerStatus
from simulator.server import BackgroundSimulator
from switchyard.fleet_models import BreakerPolicy

THRESHOLD, OPEN_S = 3, 2.0
WORKER = """
import json, pathlib, sys, time
from providers.base import ProviderRequest
from providers.claude import ClaudeProvider
from routing.breaker import Breakers
from routing.permits import ProviderLimits
from routing.guard import guarded_call
from routing.state import connect_state
from switchyard.errors import ProviderError
from switchyard.fleet_models import BreakerPolicy, RetryPolicy

sim_url, redis_url, stop = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
policy = BreakerPolicy(failure_threshold=int(sys.argv[4]), open_seconds=float(sys.argv[5]))
breakers = Breakers(connect_state(redis_url), policy, {"claude": ProviderLimits(max_in_flight=8)})
claude = ClaudeProvider(base_url=sim_url, api_key="sk-sim-shared", timeout=5)
request = ProviderRequest(model="claude-haiku-4-5", system="Task kind: pr_review", prompt="diff --git a/x b/x")
retry = RetryPolicy(attempts=2, initial_s=0.01, max_s=0.05, jitter_s=0)
while not stop.exists():
    try:
        guarded_call(breakers, "claude", lambda: claude.call(request), retry)
        outcome = "ok"
    except ProviderError as exc:
        outcome = type(exc).__name__ + ":" + getattr(exc, "reason", "")
    print(json.dumps({"t": time.time(), "outcome": outcome}), flush=True)
    time.sleep(0.02)
"""


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def outcomes(log: Path, since: float = 0.0) -> list[str]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [line["outcome"] for line in lines if line["t"] >= since]


def claude_counters(sim: httpx.Client) -> dict[str, Any]:
    counters: dict[str, Any] = sim.get("/_sim/state").json()["providers"]["claude"]
    return counters


@pytest.mark.integration
def test_two_processes_share_one_breaker(
    server: BackgroundSimulator, sim: httpx.Client, redis_url: str, processes: Processes, tmp_path: Path
) -> None:
    stop = tmp_path / "stop"
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    for log in logs:
        with log.open("wb") as out, log.with_suffix(".err").open("wb") as err:
            args = [sys.executable, "-c", WORKER, server.url, redis_url, str(stop), str(THRESHOLD), str(OPEN_S)]
            processes.spawn(args, cwd=REPO, stdout=out, stderr=err)
    client = redis.Redis.from_url(redis_url)
    breakers = Breakers(client, BreakerPolicy(failure_threshold=THRESHOLD, open_seconds=OPEN_S), {})

    def state() -> BreakerStatus:
        return breakers.status(["claude"])["claude"]

    # Both processes call a healthy Claude.
    wait_for("both workers to get answers", lambda: all("ok" in outcomes(log) for log in logs))

    # Claude fails: after the threshold the breaker opens, and both processes stop calling it.
    failing_since = time.time()
    sim.post("/_sim/providers/claude", json={"error_rate": 1.0, "error_status": 500}).raise_for_status()
    wait_for("the breaker to open", lambda: state().state == "open")
    retry_in = state().retry_in_s
    errors_at_open = claude_counters(sim)["errors"]
    # once a failure is counted, no more calls are let in flight than could still fail before it opens
    assert errors_at_open == THRESHOLD
    wait_for(
        "both workers to be refused by the open breaker",
        lambda: all("ProviderUnavailable:open" in outcomes(log, failing_since) for log in logs),
    )
    time.sleep(max(retry_in - 0.3, 0))
    assert claude_counters(sim)["errors"] == errors_at_open, "a process called Claude while the breaker was open"

    # After the open interval exactly one probe goes out, in total; it fails and the breaker opens again.
    def probe_failed() -> bool:
        last = state().last_transition
        return last is not None and (last.from_state, last.to_state) == ("half_open", "open")

    wait_for("the probe to fail", probe_failed, timeout_s=5)
    time.sleep(0.5)  # well inside the second open interval: any extra probe would show now
    assert claude_counters(sim)["errors"] == errors_at_open + 1

    # The simulator heals: the next probe closes the breaker and traffic returns to both processes.
    healed_at = time.time()
    sim.post("/_sim/providers/claude/heal").raise_for_status()
    wait_for("the breaker to close", lambda: state().state == "closed", timeout_s=OPEN_S + 5)
    assert claude_counters(sim)["errors"] == errors_at_open + 1
    wait_for("both workers to get answers again", lambda: all("ok" in outcomes(log, healed_at) for log in logs))

    stop.touch()
    for proc in processes.started:
        assert proc.wait(timeout=15) == 0
    client.close()
