"""Alerts without workers: URLs masked and validated, rows recorded once per cause with their events (the
ledger's alert line and cap, breaker transitions in the state Redis), and the sender delivering them through
apprise to a real local HTTP receiver, with retries, backoff and a sender that died mid-delivery.
On SQLite and PostgreSQL where the rows matter."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
from alert_receiver import receiving
from conftest import REPO, free_port
from pipeline_kit import factory, make_context
from test_ledger import Clock, hold, make_tasks

from alerts.daily import record_yesterday, report, spend_by
from alerts.deliver import send_one, sender
from alerts.sender import backoff, run_once
from routing.breaker import Breakers
from routing.ledger import Ledger
from routing.route import ProviderState, Route, RouteRequest, choose_route
from routing.state import record_transition
from simulator.server import BackgroundSimulator
from store import alerts
from store.db import dispose_all, session_scope
from store.migrate import ensure_schema
from store.models import AlertRow
from switchyard.alert_urls import mask, problem, scrub
from switchyard.budgets import BudgetState
from switchyard.errors import ConfigError
from switchyard.fleet import BudgetConfig, load_fleet
from switchyard.fleet_models import AlertsPolicy, BreakerPolicy
from switchyard.settings import Settings, load_settings
from tasks.attempt import Runner
from tasks.submit import submit
from workers.services import build_specs

FLEET = load_fleet(REPO / "switchyard.toml")
SWITCHYARD = str(Path(sys.executable).parent / "switchyard")
FAST = AlertsPolicy(every_s=1, timeout_s=5, retry_initial_s=0.2, retry_max_s=1, max_attempts=5)
SECRETS = ("s3cretpw", "T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7FQ", "tok3n")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    database: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    ensure_schema(database)
    yield database
    dispose_all()


def rows(url: str) -> list[AlertRow]:
    with session_scope(url) as session:
        return list(session.query(AlertRow).order_by(AlertRow.id))


# --- URLs: masked everywhere, refused when apprise cannot parse them ----------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("json://alice:s3cretpw@127.0.0.1:8080/hooks/tok3n?x=1", "json://alice:***@127.0.0.1:8080/***"),
        ("json://127.0.0.1:8080/", "json://127.0.0.1:8080/"),
        ("jsons://hooks.example.com/tok3n", "jsons://hooks.example.com/***"),
        ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", "slack://***/***/***/"),
        ("mailto://alice:s3cretpw@gmail.com", "mailtos://alice:***@gmail.com/"),
        ("bogus://alice:s3cretpw@host/tok3n", "bogus://***"),
    ],
)
def test_an_alert_url_is_shown_with_its_secrets_masked(url: str, shown: str) -> None:
    assert mask(url) == shown
    assert not any(secret in mask(url) for secret in SECRETS)


def test_an_error_text_is_scrubbed_of_every_secret_part_of_the_urls() -> None:
    url = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
    text = scrub(f"could not post to {url} (token TIiajkdnlazkcOXrIdevi7FQ)", [url])
    assert not any(secret in text for secret in SECRETS), text


def test_a_url_apprise_cannot_parse_is_refused_naming_it_masked() -> None:
    assert problem("json://127.0.0.1:8080/") is None
    why = problem("nosuch://alice:s3cretpw@host/")
    assert why is not None
    assert "nosuch://***" in why
    assert "s3cretpw" not in why


def test_validate_rejects_a_bad_alert_url_with_the_line_of_its_key(tmp_path: Path) -> None:
    text = (REPO / "switchyard.toml").read_text()
    bad = 'urls = [\n  "json://127.0.0.1:9/",\n  "nosuch://alice:s3cretpw@host/tok3n",\n]'
    assert "urls = []" in text
    text = text.replace("urls = []", bad)
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(text)
    line = text.splitlines().index("urls = [") + 1
    with pytest.raises(ConfigError) as caught:
        load_fleet(fleet)
    assert f"{fleet}:{line}: alerts.urls" in str(caught.value)
    assert "urls[1]" in str(caught.value)
    assert "s3cretpw" not in str(caught.value) and "tok3n" not in str(caught.value)
    env = {"PATH": "/usr/bin:/bin", "SWITCHYARD_HOME": str(tmp_path), "SWITCHYARD_FLEET_FILE": str(fleet)}
    done = subprocess.run([SWITCHYARD, "validate"], env=env, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{fleet}:{line}: alerts.urls" in done.stderr
    assert "nosuch://***" in done.stderr
    assert "s3cretpw" not in done.stdout + done.stderr


def test_switchyard_alert_urls_are_checked_and_kept_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_ALERT_URLS", "json://127.0.0.1:9/ nosuch://alice:s3cretpw@host/")
    with pytest.raises(ConfigError, match=r"SWITCHYARD_ALERT_URLS.*nosuch://\*\*\*") as caught:
        load_settings()
    assert "s3cretpw" not in str(caught.value)
    monkeypatch.setenv("SWITCHYARD_ALERT_URLS", "json://alice:s3cretpw@127.0.0.1:9/,json://127.0.0.1:10/")
    settings = load_settings()
    assert "s3cretpw" not in repr(settings)
    assert settings.alert_urls is not None


@pytest.mark.parametrize(("attempts", "wait"), [(1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (50, 1.0)])
def test_a_failed_delivery_waits_doubling_up_to_the_cap(attempts: int, wait: float) -> None:
    assert backoff(attempts, initial_s=0.2, max_s=1.0) == pytest.approx(wait)


# --- rows: once per cause, with their events ----------------------------------------------------------------


def test_an_alert_is_recorded_once_per_key(url: str) -> None:
    with session_scope(url) as session:
        first = alerts.record(session, cause=alerts.BUDGET_ALERT, key="k1", title="t", body="b", payload={"a": 1})
        again = alerts.record(session, cause=alerts.BUDGET_ALERT, key="k1", title="t2", body="b2")
    assert (first, again) == (True, False)
    assert [(r.key, r.title, r.state) for r in [_Row(r) for r in rows(url)]] == [("k1", "t", "pending")]


class _Row:
    def __init__(self, row: AlertRow) -> None:
        self.key, self.title, self.state = row.dedupe_key, row.title, row.state


def test_crossing_a_budgets_alert_line_records_one_alert_per_window(url: str) -> None:
    clock = Clock()
    budget = BudgetConfig(scope="all", window="hour", cap_usd=1.0, alert_usd=0.5)
    ledger = Ledger(url, FLEET.model_copy(update={"budgets": [budget]}), now=clock)
    tasks = make_tasks(url, 5)
    hold(ledger, tasks[0], 300_000)
    assert rows(url) == []
    hold(ledger, tasks[1], 300_000)  # 0.6 of 1.0: past the line
    hold(ledger, tasks[2], 300_000)  # still past it: no second alert in this window
    clock.at += timedelta(hours=1)
    hold(ledger, tasks[3], 600_000)  # the next window crosses it again
    found = rows(url)
    assert [r.cause for r in found] == [alerts.BUDGET_ALERT, alerts.BUDGET_ALERT]
    assert found[0].payload["used_micros"] == 600_000 and found[0].payload["task_id"] == tasks[1]
    assert found[0].payload["budget"] == "all/hour"
    assert "reached its alert line" in found[0].title
    assert found[0].dedupe_key != found[1].dedupe_key


def test_a_cap_that_rules_a_provider_out_is_an_alert_once_per_window(url: str) -> None:
    full = BudgetState("all", "*", "day", cap_micros=50_000, used_micros=49_000, alert_micros=40_000)
    request = RouteRequest(kind="pr_review", group="pr_review", environment="dev1", stage="dev", prompt_chars=4000)
    ready = {name: ProviderState(name=name, max_in_flight=4) for name in FLEET.providers}
    route = choose_route(request, FLEET, ready, [full], date(2026, 12, 2))
    assert isinstance(route, Route) and route.provider == "ollama"  # the free rung, past the cap
    assert [(provider, state.label) for provider, state in route.capped] == [("claude", "all/day")]
    ledger = Ledger(url, FLEET, now=Clock())
    assert ledger.record_caps([full], provider="claude") == 1
    assert ledger.record_caps([full], provider="claude") == 0
    (row,) = rows(url)
    assert row.cause == alerts.BUDGET_CAP
    assert "blocked" in row.title and row.payload["provider"] == "claude"


def test_breaker_transitions_are_alerts_once_per_opening_closing_and_disabling(url: str, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    policy = BreakerPolicy(failure_threshold=2, open_seconds=0.3, half_open_probes=1)
    breakers = Breakers(client, policy, {}, on_transition=lambda t: record_transition(url, t))

    def fail() -> None:
        got = breakers.acquire("claude")
        assert not isinstance(got, type(None))
        breakers.failure(got, "TransientError: HTTP 529")  # type: ignore[arg-type]

    fail()
    fail()  # opens
    time.sleep(0.35)
    fail()  # the half-open probe fails: the same outage, no second "opened"
    time.sleep(0.35)
    probe = breakers.acquire("claude")
    breakers.success(probe)  # type: ignore[arg-type]
    breakers.disable("claude", "ProviderDown: HTTP 401")
    client.close()
    causes = [r.cause for r in rows(url)]
    assert causes == [alerts.BREAKER_OPENED, alerts.BREAKER_CLOSED, alerts.PROVIDER_DISABLED]
    disabled = rows(url)[-1]
    assert "breaker enable claude" in disabled.body and "HTTP 401" in disabled.body


# --- delivery: a real HTTP receiver -------------------------------------------------------------------------


def test_an_alert_reaches_a_receiver_that_answers_500_twice_with_backoff(url: str) -> None:
    with session_scope(url) as session:
        alerts.record(session, cause=alerts.BUDGET_ALERT, key="k", title="Budget all/day", body="$40 of $50")
    with receiving(fail_first=2) as receiver:
        urls = [receiver.url]
        first = run_once(url, urls, FAST, sender(FAST.timeout_s))
        assert (first.retrying, rows(url)[0].attempts) == (1, 1)
        assert run_once(url, urls, FAST, sender(FAST.timeout_s)).retrying == 0  # not due yet: backoff
        deadline = time.monotonic() + 30
        while rows(url)[0].state == "pending" and time.monotonic() < deadline:
            run_once(url, urls, FAST, sender(FAST.timeout_s))
            time.sleep(0.05)
        row = rows(url)[0]
        assert (row.state, row.attempts) == ("delivered", 3)
        assert [status for _, status in receiver.seen] == [500, 500, 200]
        assert receiver.titles() == ["Budget all/day"]
        assert receiver.took[0]["message"] == "$40 of $50"
        gaps = [b - a for (a, _), (b, _) in zip(receiver.seen, receiver.seen[1:], strict=False)]
        assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # the second wait doubled the first
        run_once(url, urls, FAST, sender(FAST.timeout_s))
    assert len(receiver.seen) == 3  # delivered: never sent again


def test_a_url_that_took_the_alert_is_not_sent_it_again_while_another_is_retried(url: str) -> None:
    with session_scope(url) as session:
        alerts.record(session, cause=alerts.TASK_FAILED, key="k", title="Task failed", body="every rung")
    dead = f"json://alice:s3cretpw@127.0.0.1:{free_port()}/tok3n"
    with receiving() as receiver:
        for _ in range(3):
            run_once(url, [receiver.url, dead], FAST, sender(2.0), now=datetime.now(UTC) + timedelta(hours=1))
    row = rows(url)[0]
    assert row.state == "pending" and row.attempts == 3
    assert len(receiver.took) == 1
    assert row.last_error is not None and "json://alice:***@127.0.0.1" in row.last_error
    assert not any(secret in json.dumps(alerts_json(url)) for secret in SECRETS)
    for _ in range(2):
        run_once(url, [receiver.url, dead], FAST, sender(2.0), now=datetime.now(UTC) + timedelta(hours=1))
    assert rows(url)[0].state == "failed"  # max_attempts = 5: given up, the error kept


def alerts_json(url: str) -> list[dict[str, object]]:
    with session_scope(url) as session:
        return alerts.listing(session)


def test_a_sender_that_died_mid_delivery_leaves_the_alert_to_a_fresh_sender(url: str) -> None:
    with session_scope(url) as session:
        alerts.record(session, cause=alerts.BREAKER_OPENED, key="k", title="Breaker of claude opened", body="x")
        taken = alerts.claim_due(session, now=datetime.now(UTC), lease_s=0.5)  # then the sender is killed
    assert len(taken) == 1
    with receiving() as receiver:
        assert run_once(url, [receiver.url], FAST, sender(5.0)).delivered == 0  # still leased to the dead one
        time.sleep(0.6)
        script = (
            "import sys; from alerts.sender import run_once; from alerts.deliver import sender; "
            "from switchyard.fleet_models import AlertsPolicy; "
            "print(run_once(sys.argv[1], [sys.argv[2]], AlertsPolicy(), sender(5.0)).delivered)"
        )
        fresh = subprocess.run(
            [sys.executable, "-c", script, url, receiver.url], cwd=REPO, capture_output=True, text=True, check=True
        )
        assert fresh.stdout.strip() == "1"
        assert receiver.titles() == ["Breaker of claude opened"]
    assert rows(url)[0].state == "delivered"


def test_with_no_url_an_alert_is_kept_as_unsent(url: str) -> None:
    with session_scope(url) as session:
        alerts.record(session, cause=alerts.BUDGET_CAP, key="k", title="cap", body="x")
    assert run_once(url, [], FAST, sender(1.0)).unsent == 1
    row = rows(url)[0]
    assert row.state == "unsent" and "SWITCHYARD_ALERT_URLS" in (row.last_error or "")


def test_a_receiver_that_refuses_is_reported_masked() -> None:
    with receiving(fail_first=1) as receiver:
        why = send_one(receiver.url, "t", "b", "test", timeout_s=5)
        assert why is not None and why.startswith(f"json://127.0.0.1:{receiver.port}/") and "500" in why
        assert send_one(receiver.url, "t", "b", "test", timeout_s=5) is None


# --- the daily spend report ---------------------------------------------------------------------------------


def test_the_daily_report_sums_yesterdays_settled_spend_once_per_day(url: str) -> None:
    day = datetime(2026, 3, 9, 10, tzinfo=UTC)
    ledger = Ledger(url, FLEET.model_copy(update={"budgets": []}), now=Clock(day))
    tasks = make_tasks(url, 3)
    for task_id, micros, provider in [
        (tasks[0], 1_500, "claude"),
        (tasks[1], 2_500, "claude"),
        (tasks[2], 700, "codex"),
    ]:
        hold(ledger, task_id, 10_000, provider=provider)
        ledger.settle(task_id=task_id, attempt=1, charged_micros=micros, price_version="v1")
    with session_scope(url) as session:
        lines = spend_by(session, day.date())
    assert [(line.provider, line.attempts, line.charged_micros) for line in lines] == [
        ("claude", 2, 4_000),
        ("codex", 1, 700),
    ]
    assert report(day.date(), lines)["payload"]["total_micros"] == 4_700
    assert record_yesterday(url, today=day.date() + timedelta(days=1)) is True
    assert record_yesterday(url, today=day.date() + timedelta(days=1)) is False
    assert record_yesterday(url, today=day.date()) is False  # the day before had no spend: no report
    (row,) = rows(url)
    assert row.cause == alerts.DAILY_REPORT and row.title.endswith("2026-03-09: $0.0047")
    assert "claude $0.0040" in row.body and "pr_review $0.0047" in row.body


# --- a task that failed on every rung -------------------------------------------------------------------------


def test_a_task_that_failed_on_every_rung_is_one_alert_with_its_terminal_status(
    tmp_path: Path, server: BackgroundSimulator, sim: httpx.Client, redis_url: str, sqlite_url: str
) -> None:
    ctx = make_context(tmp_path, server.url, redis_url, sqlite_url)
    sim.post("/_sim/providers/claude", json={"error_rate": 1.0, "error_status": 413}).raise_for_status()
    sim.post("/_sim/providers/ollama", json={"missing_models": ["qwen2.5-coder:7b"]}).raise_for_status()
    task_id = submit({"kind": "pr_review", "environment": "dev1", "branch": "feature/sample-1"}, context=ctx)
    assert Runner(ctx, make_provider=factory(), sleep=lambda _: None).run(task_id) == "no_provider"
    (row,) = rows(sqlite_url)
    assert (row.cause, row.dedupe_key) == (alerts.TASK_FAILED, f"task_failed:{task_id}")
    assert row.title == f"Task {task_id[:8]} (pr_review, dev1) failed on every rung"
    assert [f.split(":")[0] for f in row.payload["failures"]] == ["claude", "ollama"]
    assert row.payload["status"] == "no_provider"


# --- the CLI: alerts list, alerts test ---------------------------------------------------------------------------


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SWITCHYARD, *args], env=env, cwd=REPO, capture_output=True, text=True, check=False)


def test_alerts_list_and_test_on_the_command_line(tmp_path: Path, sqlite_url: str) -> None:
    ensure_schema(sqlite_url)
    with session_scope(sqlite_url) as session:
        alerts.record(session, cause=alerts.BUDGET_ALERT, key="k1", title="Budget all/day [alert]", body="$40")
        alerts.record(session, cause=alerts.BREAKER_OPENED, key="k2", title="Breaker of claude opened", body="x")
    dead = f"json://alice:s3cretpw@127.0.0.1:{free_port()}/hooks/tok3n"
    with receiving() as receiver:
        env = {
            "PATH": "/usr/bin:/bin",
            "SWITCHYARD_HOME": str(tmp_path / "home"),
            "SWITCHYARD_DATABASE_URL": sqlite_url,
            "SWITCHYARD_ALERT_URLS": f"{receiver.url} {dead}",
        }
        listed = cli(env, "alerts", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        found = json.loads(listed.stdout)["alerts"]
        assert [(a["cause"], a["state"]) for a in found] == [("breaker_opened", "pending"), ("budget_alert", "pending")]
        table = cli(env, "alerts", "list")
        assert "Budget all/day [alert]" in table.stdout and "breaker_opened" in table.stdout
        assert cli(env, "alerts", "list", "--cause", "nosuch").returncode == 2

        tested = cli(env, "alerts", "test", "--json")
        assert tested.returncode == 1  # one URL did not take it
        results = json.loads(tested.stdout)["results"]
        assert [(r["url"], r["delivered"]) for r in results] == [
            (f"json://127.0.0.1:{receiver.port}/", True),
            (f"json://alice:***@127.0.0.1:{dead.split(':')[3].split('/', maxsplit=1)[0]}/***", False),
        ]
        assert receiver.titles() == ["Switchyard test alert"]
        shown = cli(env, "alerts", "test")
        assert "NOT delivered" in shown.stdout and "delivered" in shown.stdout
        assert "s3cretpw" not in tested.stdout + shown.stdout + tested.stderr and "tok3n" not in shown.stdout
        validated = cli(env, "validate")
        assert f"json://127.0.0.1:{receiver.port}/" in validated.stdout and "s3cretpw" not in validated.stdout
        none = cli({**env, "SWITCHYARD_ALERT_URLS": ""}, "alerts", "test")
        assert none.returncode == 2 and "no alert URL configured" in none.stderr


def test_alert_urls_reach_the_fleets_processes_in_their_environment_only(tmp_path: Path) -> None:
    urls = "json://alice:s3cretpw@127.0.0.1:9/tok3n"
    settings = Settings(home=tmp_path, alert_urls=urls)
    specs = build_specs(settings, FLEET, simulate=True, base_env={"PATH": "/bin", "SWITCHYARD_ALERT_URLS": "old"})
    for spec in specs:
        assert spec.env["SWITCHYARD_ALERT_URLS"] == urls
        assert "s3cretpw" not in " ".join(spec.argv) and "s3cretpw" not in repr(spec)


def test_a_cap_met_by_a_running_task_is_one_alert_for_the_window(
    tmp_path: Path, server: BackgroundSimulator, sim: httpx.Client, redis_url: str, sqlite_url: str
) -> None:
    ctx = make_context(tmp_path, server.url, redis_url, sqlite_url)
    ctx.ledger().set_budget(scope="provider", target="claude", window="day", cap_usd=0.000001)
    for n in (1, 2):
        task_id = submit({"kind": "pr_review", "environment": "dev1", "branch": f"feature/sample-{n}"}, context=ctx)
        assert Runner(ctx, make_provider=factory(), sleep=lambda _: None).run(task_id) == "succeeded"
    (row,) = rows(sqlite_url)
    assert row.cause == alerts.BUDGET_CAP
    assert row.title == "Budget provider=claude/day reached its cap: claude blocked"
    assert row.payload["cap_micros"] == 1
