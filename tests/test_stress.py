"""``switchyard stress``: the phases and gates as pure functions, then the cycle end to end (``--quick``, a real
fleet under Locust's load shape), once through and once stopped by a gate that cannot hold."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import REPO, patient, wait_until

from ops.stress import locust_command, queue_waits, table
from ops.stress_phases import (
    PHASES,
    Gates,
    failed_gates,
    overrides_from_env,
    parse_overrides,
    percentile,
    with_overrides,
)
from switchyard.errors import InputError

NAMES = ["idle", "baseline", "light", "medium", "heavy", "extreme", "chaos"]
# the end-to-end runs check the cycle's mechanics (real load, zero lost, the chaos phase's recovery), not how
# fast a shared machine is: the latency and memory gates are widened; the impossible-gate run tightens one
WIDE = "*.p95_submit_ms=60000 *.p95_queue_wait_s=900 *.rss_growth_mb=4000"


def test_the_phases_are_the_seeds_seven_in_order_with_a_growing_load() -> None:
    assert [p.name for p in PHASES] == NAMES
    loads = [p.rate for p in PHASES[:-1]]
    assert loads == sorted(loads) and loads[0] == 0 and len(set(loads)) == len(loads)
    assert [p.chaos for p in PHASES] == [False] * 6 + [True]
    assert 80 <= sum(p.quick_s for p in PHASES) <= 120  # --quick: the cycle in about two minutes


def test_gate_overrides_are_parsed_and_bad_ones_refused_with_what_to_write() -> None:
    assert parse_overrides(["light.p95_submit_ms=5"]) == {("light", "p95_submit_ms"): 5.0}
    assert len(parse_overrides(["*.lost=1"])) == len(PHASES)
    for bad, said in [
        ("light", "PHASE.GATE=VALUE"),
        ("nosuch.lost=1", "no phase 'nosuch'"),
        ("light.speed=1", "no gate 'speed'"),
        ("light.lost=x", "not a number"),
        ("light.lost=-1", "at least 0"),
    ]:
        with pytest.raises(InputError, match=re.escape(said)):
            parse_overrides([bad])
    assert overrides_from_env({"SWITCHYARD_STRESS_GATES": "a.b=1, c.d=2"}) == ["a.b=1", "c.d=2"]
    tightened = with_overrides(PHASES, {("light", "lost"): 2.0})
    assert tightened[2].gates.lost == 2 and isinstance(tightened[2].gates.lost, int)
    assert tightened[1] == PHASES[1]


def test_failed_gates_name_the_gate_the_value_and_the_limit() -> None:
    gates = Gates(error_rate=0.02, p95_submit_ms=1000, p95_queue_wait_s=30, rss_growth_mb=100)
    assert failed_gates(gates, {"error_rate": 0.0, "p95_submit_ms": None, "lost": 0}) == []
    assert failed_gates(gates, {"p95_submit_ms": 1200, "lost": 1, "overspend_usd": 0.5}) == [
        "p95_submit_ms: 1200 > 1000",
        "overspend_usd: 0.5 > 0",
        "lost: 1 > 0",
    ]


def test_percentile_and_queue_waits() -> None:
    assert percentile([], 0.95) is None
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    rows = [
        ("a", now - timedelta(seconds=10), now - timedelta(seconds=7), "succeeded"),
        ("b", (now - timedelta(seconds=4)).replace(tzinfo=None), None, "queued"),  # SQLite gives naive UTC
    ]
    assert queue_waits(rows, now) == [3.0, 4.0]


def processes_of(home: str) -> list[int]:
    """Pids whose environment names ``home`` (the fleet's SWITCHYARD_HOME, Locust's plan)."""
    found = []
    needle = home.encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def run_stress(out: Path, gates: str) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    """``switchyard stress --quick`` in a process group of its own; afterwards nothing it started may run."""
    argv = [str(Path(sys.executable).with_name("switchyard")), "stress", "--quick", "--keep", "--out", str(out)]
    env = {**os.environ, "SWITCHYARD_STRESS_GATES": gates}
    process = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=patient(420))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)  # the driver stops its fleet on SIGTERM
        stdout, stderr = process.communicate(timeout=120)
        pytest.fail(f"switchyard stress --quick did not finish: {stderr[-3000:]}")
    proc = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
    kept = re.search(r"kept (\S+)", stderr)
    assert kept, stderr[-3000:]
    home = kept.group(1)
    try:
        assert processes_of(home) == [], f"left running: {processes_of(home)}"
    finally:
        for pid in processes_of(home):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)
    data = json.loads((out / "stress.json").read_text())
    return proc, data


@pytest.mark.integration
@pytest.mark.timeout(1200)
def test_the_quick_cycle_runs_every_phase_on_a_real_fleet(tmp_path: Path) -> None:
    proc, data = run_stress(tmp_path, WIDE)
    assert proc.returncode == (0 if data["ok"] else 1), proc.stderr[-3000:]
    phases = {p["name"]: p for p in data["phases"]}  # type: ignore[attr-defined]
    assert list(phases) == NAMES
    assert data["ok"], f"{data['failed']}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "stress: passed" in proc.stdout
    for name, phase in phases.items():
        measured = phase["measured"]
        assert phase["state"] == "passed", (name, phase)
        assert measured["lost"] == 0 and measured["overspend_usd"] == 0 and measured["workers_down"] == 0
        assert set(phase["gates"]) >= {"error_rate", "p95_submit_ms", "p95_queue_wait_s", "rss_growth_mb", "lost"}
        if name != "idle":  # Locust submitted over the API, and the fleet got every accepted task
            assert measured["submitted"] > 0 and measured["tasks"] > 0, (name, measured)
            assert measured["error_rate"] is not None and measured["p95_submit_ms"] is not None
            assert measured["p95_queue_wait_s"] is not None
            assert (tmp_path / "locust-phases" / f"{name}.json").exists()
        assert phase["series"], name  # the driver's samples, drawn in the phase's chart
    events = " ".join(phases["chaos"]["events"])
    assert "kill -9 worker-dev_workers" in events and "back as pid" in events, events
    assert "fail with 529" in events and "providers healed" in events
    page = (tmp_path / "stress.html").read_text()
    for name in NAMES:
        assert f'id="chart-{name}"' in page
    assert "vegaEmbed" in page and not re.search(r"<script[^>]+src=", page)  # self-contained: no CDN
    assert table(data).splitlines()[2].startswith("idle")  # type: ignore[arg-type]


@pytest.mark.integration
@pytest.mark.timeout(1200)
def test_an_impossible_gate_stops_the_cycle_at_its_phase_and_names_it(tmp_path: Path) -> None:
    proc, data = run_stress(tmp_path, f"{WIDE} light.p95_submit_ms=0.001")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert data["ok"] is False
    assert data["failed"]["phase"] == "light"  # type: ignore[index]
    assert data["failed"]["gates"][0].startswith("p95_submit_ms: ")  # type: ignore[index]
    assert "stopped at phase light: p95_submit_ms: " in proc.stdout
    states = {p["name"]: p["state"] for p in data["phases"]}  # type: ignore[attr-defined]
    assert states["idle"] == states["baseline"] == "passed" and states["light"] == "failed"
    assert all(states[n] in ("interrupted", "not run") for n in NAMES[3:]), states
    assert states["chaos"] == "not run"


class Accepting(BaseHTTPRequestHandler):
    """A status API stand-in: takes every POST /api/tasks (202) and remembers the bodies and the auth header."""

    bodies: list[dict[str, object]] = []
    auth: list[str | None] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        Accepting.bodies.append(json.loads(self.rfile.read(length)))
        Accepting.auth.append(self.headers.get("authorization"))
        self.send_response(202 if self.path == "/api/tasks" else 404)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"id": "x"}')

    def log_message(self, *_args: object) -> None:
        pass


def test_the_locustfile_walks_the_phases_cuts_stats_per_phase_and_stops_on_the_stop_file(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Accepting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    phases = [
        {"name": "idle", "duration_s": 2, "rate": 0, "users": 0},
        {"name": "light", "duration_s": 4, "rate": 4, "users": 2},
        {"name": "never", "duration_s": 600, "rate": 1, "users": 1},
    ]
    plan = tmp_path / "plan.json"
    events, stats = tmp_path / "events.jsonl", tmp_path / "stats"
    stats.mkdir()
    plan.write_text(
        json.dumps(
            {
                "phases": phases,
                "kinds": [["pr_review", 1], ["dev_task", 1]],
                "environments": ["dev1", "dev2"],
                "branches": 3,
                "tag": "t1",
                "events": str(events),
                "stats_dir": str(stats),
            }
        )
    )
    env = {**os.environ, "SWITCHYARD_STRESS_PLAN": str(plan), "SWITCHYARD_API_TOKEN": "tok-123"}
    argv = locust_command(plan, f"http://127.0.0.1:{server.server_port}", tmp_path)
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until("the third phase to start", lambda: events.exists() and '"never"' in events.read_text(), 60)
        (tmp_path / "stop").write_text("a gate failed")  # the driver's way to end the run
        _, err = process.communicate(timeout=patient(60))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        server.shutdown()
        server.server_close()
    assert process.returncode == 0, err[-2000:]
    said = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["phase"] for e in said] == ["idle", "light", "never", None] and said[-1]["stopped"] is True
    light = json.loads((stats / "light.json").read_text())
    assert 8 <= light["requests"] <= 24 and light["failures"] == 0 and light["p95_ms"] is not None
    assert json.loads((stats / "idle.json").read_text())["requests"] == 0
    submitted = [b for b in Accepting.bodies if str(b["title"]).startswith("stress t1 light ")]
    assert len(submitted) >= 8
    assert {b["kind"] for b in submitted} == {"pr_review", "dev_task"}
    assert all("branch" in b for b in submitted if b["kind"] == "pr_review")
    assert set(Accepting.auth) == {"Bearer tok-123"}
