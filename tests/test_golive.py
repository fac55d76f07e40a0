"""`switchyard smoke` and `switchyard validate --report` against a real staging fleet (one, shared by the module):
smoke passes and leaves nothing behind; the report is checked item by item; a planted secret in a log gives
NO-GO naming it; the decision rule (every critical item, 95% of the rest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
import redis
from conftest import free_port, patient, stop_process_group
from sqlalchemy import func, select

from ops.golive import ITEMS, Outcome, Probes, Report
from ops.smoke import api_url, auth_headers
from routing.keys import provider_keys
from store.db import session_scope
from store.models import ApiToken, BudgetOverride, Environment, Spend, Task
from switchyard.settings import load_settings
from tasks.context import build_context

pytestmark = pytest.mark.e2e
SWITCHYARD = str(Path(sys.executable).parent / "switchyard")
ALERT_SECRET = "alert-secret-path-4711"
# Items whose result is a live measurement on a shared, loaded machine: checked for a figure, not a pass.
MEASURED = {"routing_latency", "health_latency", "api_latency"}


class Fleet:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.ports = {name: free_port() for name in ("BROKER", "API", "FLOWER", "SIMULATOR")}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OLLAMA_HOST", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"):
            self.env.pop(name, None)
        self.env.update({f"SWITCHYARD_{name}_PORT": str(port) for name, port in self.ports.items()})
        self.env.update(
            SWITCHYARD_HOME=str(home),
            SWITCHYARD_PROFILE="staging",
            SWITCHYARD_ALERT_URLS=f"json://127.0.0.1:{free_port()}/{ALERT_SECRET}",
        )
        self.data = home / "staging"

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SWITCHYARD, *args], env=self.env, capture_output=True, text=True, timeout=patient(timeout), check=False
        )

    def pids(self) -> list[int]:
        run_dir = self.data / "run"
        return [json.loads(p.read_text())["pid"] for p in run_dir.glob("*.pid")] if run_dir.exists() else []


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    running = Fleet(tmp_path_factory.mktemp("golive") / "home")
    try:
        up = running.cli("up", "--simulate", "--detach", timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr
        yield running
    finally:
        pids = running.pids()
        running.cli("down", timeout=300)
        for pid in pids:
            stop_process_group(pid)


def test_smoke_exits_3_when_the_fleet_is_not_running(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(SWITCHYARD_HOME=str(tmp_path / "home"), SWITCHYARD_BROKER_PORT=str(free_port()))
    done = subprocess.run([SWITCHYARD, "smoke"], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "is not running" in done.stderr and "switchyard up" in done.stderr


@pytest.mark.timeout(1800)
def test_smoke_passes_against_the_fleet_and_leaves_nothing_behind(fleet: Fleet) -> None:
    done = fleet.cli("smoke", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is True and result["left_behind"] == []
    checks = {c["name"]: c for c in result["checks"]}
    groups = ("high_level", "dev_workers", "pr_review", "pr_impl", "pr_integ")
    expected = {f"workers answer: {g}" for g in groups} | {f"{k} end to end" for k in ("plan", "dev_task", "pr_impl")}
    expected |= {"pr_review end to end", "pr_integ end to end", "status API answers", "health answers"}
    expected |= {"/metrics answers", "Flower answers", "budget hold taken and released"}
    expected |= {"breaker opens and recovers (simulator)", "scratch environment made", "scratch tasks submitted"}
    assert set(checks) == expected
    assert all(c["ok"] is True for c in checks.values()), checks
    assert all(c["seconds"] >= 0 for c in checks.values())
    assert "with its login" in checks["Flower answers"]["detail"]  # staging's Flower asks for one

    # nothing left: scratch directory, environment and task rows, budget, breaker keys, simulator fault
    assert not (fleet.data / "smoke-scratch").exists()
    with session_scope(f"sqlite:///{fleet.data / 'switchyard.db'}") as session:
        assert session.get(Environment, "smoke-scratch") is None
        assert session.scalar(select(func.count()).select_from(Task)) == 0  # smoke's tasks went with it
        assert session.scalar(select(func.count()).select_from(Spend)) == 0
        assert session.scalar(select(func.count()).where(BudgetOverride.target == "smoke-scratch")) == 0
        tokens = session.scalars(select(ApiToken).where(ApiToken.name.like("smoke-%"))).all()
        assert tokens and all(t.revoked_at is not None for t in tokens)  # staging asks for one; none kept alive
    password = (fleet.data / "secrets" / "broker-password").read_text().strip()
    client = redis.Redis(port=fleet.ports["BROKER"], password=password)
    keys = provider_keys("smoke-breaker")
    assert client.exists(keys.breaker, keys.inflight, keys.calls, keys.probes, keys.models) == 0
    client.close()
    simulator = httpx.get(f"http://127.0.0.1:{fleet.ports['SIMULATOR']}/_sim/state", timeout=30).json()
    assert simulator["providers"]["ollama"]["fail_next"] == 0


@pytest.mark.timeout(1800)
def test_report_checked_item_by_item(fleet: Fleet, tmp_path: Path) -> None:
    """Every item passes, auth included (staging asks for a token; the report makes a read token of its own and
    revokes it); the live latency items are measured, and only they may fail on a loaded machine."""
    out = tmp_path / "report.json"
    done = fleet.cli("validate", "--report", "--format", "json", "--out", str(out))
    report = json.loads(out.read_text())
    assert json.loads(done.stdout) == report
    assert report["profile"] == "staging"
    items = {i["key"]: i for i in report["items"]}
    assert list(items) == [item.key for item in ITEMS]
    assert report["critical_failed"] == [], report
    assert items["auth"]["critical"] is True and items["auth"]["ok"] is True
    assert items["auth"]["detail"] == "GET /api/tasks without a token: 401"
    for key, item in items.items():
        if key in MEASURED:
            assert " ms" in item["detail"], item  # measured live, whatever the machine's load made of it
            continue
        assert item["ok"] is True, item
    if all(items[key]["ok"] for key in MEASURED):
        assert report["decision"] == "GO" and done.returncode == 0, done.stdout + done.stderr
    else:
        assert done.returncode == (0 if report["decision"] == "GO" else 1), done.stdout + done.stderr
    assert items["json_logs"]["critical"] is True and "parse as JSON" in items["json_logs"]["detail"]
    assert items["alerts"]["detail"] == "2 alert lines, 1 alert URLs"
    assert items["routing_latency"]["critical"] is False
    assert "no secret value" in items["secret_rows"]["detail"]
    flower = (fleet.data / "secrets" / "flower-password").read_text().strip()
    broker = (fleet.data / "secrets" / "broker-password").read_text().strip()
    for secret in (ALERT_SECRET, flower, broker):
        assert secret not in done.stdout and secret not in done.stderr


@pytest.mark.timeout(1800)
def test_a_planted_secret_in_a_log_gives_no_go_naming_it(fleet: Fleet, tmp_path: Path) -> None:
    log = fleet.data / "logs" / "worker-pr_review.log"
    before = log.read_bytes()
    planted = json.dumps({"event": f"posting to {fleet.env['SWITCHYARD_ALERT_URLS']}", "level": "info"}) + "\n"
    try:
        with log.open("a") as f:
            f.write(planted)
        out = tmp_path / "report.md"
        done = fleet.cli("validate", "--report", "--out", str(out))
    finally:
        with log.open("r+b") as f:  # the worker keeps appending: cut only the planted line back out
            rest = f.read()[len(before) :]
            f.seek(0)
            f.write(before + rest.replace(planted.encode(), b""))
            f.truncate()
    assert done.returncode == 1, done.stdout + done.stderr
    text = out.read_text()
    assert text == done.stdout
    assert text.startswith("# Go/no-go: NO-GO")
    row = next(line for line in text.splitlines() if line.startswith("| no secret in log files |"))
    assert "| yes | FAIL |" in row and "SWITCHYARD_ALERT_URLS in worker-pr_review.log" in row
    assert "no secret in log files" in text.split("Critical items failing:")[1]
    assert ALERT_SECRET not in done.stdout and ALERT_SECRET not in done.stderr


def test_decision_needs_every_critical_item_and_95_percent_of_the_rest() -> None:
    def report(failing: set[str]) -> Report:
        outcomes = [Outcome(item, item.key not in failing, "", 0.0, "staging" in item.critical_in) for item in ITEMS]
        return Report("staging", outcomes, "now")

    assert report(set()).go
    assert not report({"smoke"}).go and report({"smoke"}).as_json()["critical_failed"] == ["smoke"]
    # the non-critical items are few: one failing drops their rate under 95%
    assert not report({"metrics"}).go
    assert report({"metrics"}).non_critical_rate < 0.95
    markdown = report({"smoke"}).markdown()
    assert markdown.startswith("# Go/no-go: NO-GO") and "| smoke passing | yes | FAIL |" in markdown


def test_auth_item_passes_once_the_api_answers_401_without_a_token(tmp_path: Path) -> None:
    """The probe is real HTTP: an API that wants a token (401 without one) passes; the token, when given, is sent
    as a bearer header by the one helper smoke and the report use."""
    seen: list[str | None] = []

    class WantsToken(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(401 if self.headers.get("Authorization") is None else 200)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), WantsToken)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ctx = build_context(load_settings(home=tmp_path, api_port=server.server_address[1]))
        probes = Probes(ctx, "tok-123456", 10.0)
        assert probes.auth() == "GET /api/tasks without a token: 401"
        assert seen == [None]
        response = httpx.get(f"{api_url(ctx)}/api/tasks", headers=auth_headers("tok-123456"), timeout=10)
        assert response.status_code == 200 and seen[-1] == "Bearer tok-123456"
        assert auth_headers(None) == {}
    finally:
        server.shutdown()
        server.server_close()
