"""The locustfile of ``switchyard stress``: run by ``locust -f`` in a subprocess of its own, never imported by
Switchyard (Locust patches the standard library with gevent when it is imported).

It reads the plan :mod:`ops.stress` wrote (``SWITCHYARD_STRESS_PLAN``: the phases, the environments, where to
write), and :class:`StressShape` walks the phases: each phase holds its number of users, and every user
submits tasks over the status API (``POST /api/tasks``) at the pace that makes the phase's rate. At every
phase boundary it writes the phase's Locust statistics (``<stats_dir>/<phase>.json``), resets them, and
appends the new phase with its start time to the event file the driver follows. A ``stop`` file beside the
plan (the driver writes it when a gate fails) ends the run at the next tick.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from locust import HttpUser, LoadTestShape, task

PLAN_PATH = Path(os.environ["SWITCHYARD_STRESS_PLAN"])
PLAN: dict[str, Any] = json.loads(PLAN_PATH.read_text())
PHASES: list[dict[str, Any]] = PLAN["phases"]
# kind, weight: reviews of the sample's feature branches are the cheapest, a pr_impl runs the whole pipeline
KINDS = [kind for kind, weight in PLAN["kinds"] for _ in range(weight)]
STATE: dict[str, Any] = {"phase": None, "sent": 0, "points": []}


def current_phase() -> dict[str, Any] | None:
    name = STATE["phase"]
    return next((p for p in PHASES if p["name"] == name), None)


def append_event(event: dict[str, Any]) -> None:
    with open(PLAN["events"], "a", encoding="utf-8") as out:
        out.write(json.dumps(event) + "\n")


class Submitter(HttpUser):
    """One API client: submits one task per turn, paced so that the phase's users make its rate together."""

    def wait_time(self) -> float:
        phase = current_phase()
        rate = float(phase["rate"]) if phase else 0.0
        users = max(1, int(phase["users"])) if phase else 1
        if rate <= 0:
            return 1.0
        pacing = users / rate
        last = getattr(self, "_turn_started", None)
        now = time.monotonic()
        spent = 0.0 if last is None else now - last
        self._turn_started = now + max(0.0, pacing - spent)
        return max(0.0, pacing - spent)

    def on_start(self) -> None:
        token = os.environ.get("SWITCHYARD_API_TOKEN")
        if token:
            self.client.headers["Authorization"] = f"Bearer {token}"

    @task
    def submit(self) -> None:
        phase = STATE["phase"] or "none"
        n = STATE["sent"]
        STATE["sent"] = n + 1
        kind = KINDS[n % len(KINDS)]
        envs = PLAN["environments"]
        env = envs[n % len(envs)]
        title = f"stress {PLAN['tag']} {phase} {n}"
        body: dict[str, Any] = {"kind": kind, "environment": env, "title": title}
        if kind == "pr_review":
            body["branch"] = f"feature/sample-{n % PLAN['branches'] + 1}"
        else:
            body["description"] = f"A small change for {title}."
        with self.client.post("/api/tasks", json=body, name=f"POST /api/tasks {kind}", catch_response=True) as r:
            if r.status_code not in (200, 201, 202):
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")


class StressShape(LoadTestShape):
    """The phases one after the other, each for its duration; stats are cut at every boundary."""

    def tick(self) -> tuple[int, float] | None:
        run_time = float(self.get_run_time())  # type: ignore[no-untyped-call]
        stop = PLAN_PATH.with_name("stop").exists()
        elapsed, phase = 0.0, None
        for candidate in PHASES:
            elapsed += float(candidate["duration_s"])
            if run_time < elapsed:
                phase = candidate
                break
        name = None if (phase is None or stop) else phase["name"]
        if name != STATE["phase"]:
            self.cut(STATE["phase"])
            STATE["phase"] = name
            append_event({"phase": name, "t": time.time(), "stopped": stop})
        if name is None or phase is None:
            return None
        if self.runner is not None:
            total = self.runner.stats.total
            p95 = total.get_current_response_time_percentile(0.95) if total.num_requests else None
            STATE["points"].append({"t": time.time(), "rps": total.current_rps, "p95_ms": p95})
        users = int(phase["users"])
        return users, float(max(users, 1))

    def cut(self, ended: str | None) -> None:
        """Write the statistics of the phase that ended (Locust's own entries), then start them afresh."""
        if ended is None or self.runner is None:
            return
        stats = self.runner.stats
        total = stats.total
        summary = {
            "phase": ended,
            "requests": total.num_requests,
            "failures": total.num_failures,
            "p50_ms": total.get_response_time_percentile(0.5) if total.num_requests else None,
            "p95_ms": total.get_response_time_percentile(0.95) if total.num_requests else None,
            "max_ms": total.max_response_time if total.num_requests else None,
            "rps": total.total_rps,
            "entries": [entry.serialize() for entry in stats.entries.values()],
            "errors": [error.serialize() for error in stats.errors.values()],
            "history": STATE["points"],  # per tick (1 s): Locust's current rate and p95 of the last seconds
        }
        out = Path(PLAN["stats_dir"]) / f"{ended}.json"
        out.write_text(json.dumps(summary, default=str))
        stats.reset_all()
        STATE["points"] = []
