"""The breaker is shared: two separate OS processes call Claude through the simulator under one Redis breaker.

After the threshold both stop calling; after the open interval exactly one probe goes out in total; when the
simulator heals, the probe closes the breaker and both processes' traffic returns.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from conftest import REPO, Processes, load_factor, patient, wait_until

from routing.breaker import Breakers
from routing.permits import BreakerStatus
from simulator.server import BackgroundSimulator
from switchyard.fleet_models import BreakerPolicy

# The open interval stretches with the machine's load (2 s when idle): the test reads the simulator's counters
# inside it and must not see a late read as a call made while the breaker was open.
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
    open_s = OPEN_S * load_factor()
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    for log in logs:
        with log.open("wb") as out, log.with_suffix(".err").open("wb") as err:
            args = [sys.executable, "-c", WORKER, server.url, redis_url, str(stop), str(THRESHOLD), str(open_s)]
            processes.spawn(args, cwd=REPO, stdout=out, stderr=err)
    client = redis.Redis.from_url(redis_url)
    breakers = Breakers(client, BreakerPolicy(failure_threshold=THRESHOLD, open_seconds=open_s), {})

    def state() -> BreakerStatus:
        return breakers.status(["claude"])["claude"]

    def errors_while_open(expected: int, for_s: float | None = None) -> None:
        """Read Claude's error count until the breaker leaves the open state it is in now (or for ``for_s``);
        every read made while it was still open (its state read afterwards says so) must show ``expected``."""
        opened = state()
        assert opened.state == "open", opened
        reads, until = 0, None if for_s is None else time.monotonic() + for_s
        while until is None or time.monotonic() < until:
            errors = claude_counters(sim)["errors"]
            now = state()
            if now.state != "open" or now.last_transition != opened.last_transition:
                break
            assert errors == expected, "a process called Claude while the breaker was open"
            reads += 1
            time.sleep(0.05)
        assert reads > 0, "no read of the simulator's counters fell inside the open interval"

    # Both processes call a healthy Claude (once they have started: slow on a loaded machine).
    wait_until("both workers to get answers", lambda: all("ok" in outcomes(log) for log in logs), 20)

    # Claude fails: after the threshold the breaker opens, and both processes stop calling it.
    failing_since = time.time()
    sim.post("/_sim/providers/claude", json={"error_rate": 1.0, "error_status": 500}).raise_for_status()
    wait_until("the breaker to open", lambda: state().state == "open", 20)
    errors_at_open = claude_counters(sim)["errors"]
    # once a failure is counted, no more calls are let in flight than could still fail before it opens
    assert errors_at_open == THRESHOLD
    wait_until(
        "both workers to be refused by the open breaker",
        lambda: all("ProviderUnavailable:open" in outcomes(log, failing_since) for log in logs),
        20,
    )
    errors_while_open(errors_at_open)  # until the open interval ends

    # After the open interval exactly one probe goes out, in total; it fails and the breaker opens again.
    def probe_failed() -> bool:
        last = state().last_transition
        return last is not None and (last.from_state, last.to_state) == ("half_open", "open")

    wait_until("the probe to fail", probe_failed, 5)
    reopened = state().last_transition
    errors_while_open(errors_at_open + 1, for_s=open_s / 4)  # into the second open interval: an extra probe shows

    # The simulator heals: the next probe closes the breaker and traffic returns to both processes.
    healed_at = time.time()
    sim.post("/_sim/providers/claude/heal").raise_for_status()
    healed_while_open = state()
    assert (healed_while_open.state, healed_while_open.last_transition) == ("open", reopened), "healed too late"
    wait_until("the breaker to close", lambda: state().state == "closed", open_s + 5)
    assert claude_counters(sim)["errors"] == errors_at_open + 1
    wait_until("both workers to get answers again", lambda: all("ok" in outcomes(log, healed_at) for log in logs), 20)

    stop.touch()
    for proc in processes.started:
        assert proc.wait(timeout=patient(15)) == 0
    client.close()
