"""The shared breaker and limits against a real Redis: every transition, the probe race, leases, rates, fail closed."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import REPO, free_port
from fastapi.testclient import TestClient

from routing.breaker import Breakers
from routing.permits import Denial, Permit, ProviderLimits, Transition
from routing.route import ProviderState
from routing.state import providers_view, record_transition, transition_history
from store.migrate import ensure_schema
from switchyard.errors import StateUnavailable
from switchyard.fleet import load_fleet
from switchyard.fleet_models import BreakerPolicy
from switchyard.settings import DEFAULT_FLEET_FILE, Settings
from tasks.context import build_context
from web.app import create_app

P = "claude"
POLICY = BreakerPolicy(failure_threshold=3, open_seconds=0.5, half_open_probes=1)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def seen() -> list[Transition]:
    return []


def make(
    client: redis.Redis,
    seen: list[Transition] | None = None,
    *,
    policy: BreakerPolicy = POLICY,
    limits: ProviderLimits | None = None,
) -> Breakers:
    record = None if seen is None else seen.append
    return Breakers(client, policy, {P: limits or ProviderLimits(max_in_flight=100)}, on_transition=record)


def permit(breakers: Breakers) -> Permit:
    got = breakers.acquire(P)
    assert isinstance(got, Permit), got
    return got


def denial(breakers: Breakers) -> Denial:
    got = breakers.acquire(P)
    assert isinstance(got, Denial), got
    return got


def trip(breakers: Breakers, n: int = 3) -> None:
    permits = [permit(breakers) for _ in range(n)]  # all in flight before the first failure is counted
    for i, granted in enumerate(permits):
        breakers.failure(granted, f"TransientError: HTTP 500 #{i}")


def moves(seen: list[Transition]) -> list[tuple[str, str]]:
    return [(t.from_state, t.to_state) for t in seen]


def test_opens_after_the_threshold_of_failures_in_a_row(client: redis.Redis, seen: list[Transition]) -> None:
    breakers = make(client, seen)
    trip(breakers, 2)
    breakers.success(permit(breakers))  # a success resets the count: failures must be consecutive
    assert breakers.status([P])[P].failures == 0
    trip(breakers, 2)
    assert breakers.status([P])[P].state == "closed"
    breakers.failure(permit(breakers), "Overloaded: HTTP 529")
    status = breakers.status([P])[P]
    assert (status.state, status.failures) == ("open", 3)
    assert 0.3 < status.retry_in_s <= 0.5
    assert moves(seen) == [("closed", "open")]
    assert seen[0].cause == "3 failures in a row; last: Overloaded: HTTP 529"
    refused = denial(breakers)
    assert refused.reason == "open"
    assert refused.retry_in_s is not None and 0 < refused.retry_in_s <= 0.5
    assert "breaker open" in refused.message


def test_half_open_after_the_interval_then_closed_on_a_probe_success(
    client: redis.Redis, seen: list[Transition]
) -> None:
    breakers = make(client, seen)
    trip(breakers)
    time.sleep(0.55)
    assert breakers.snapshot([P])[P].breaker == "half_open"
    probe = permit(breakers)
    assert probe.probe
    assert denial(breakers).reason == "probing"
    assert breakers.snapshot([P])[P].probe_free is False
    breakers.success(probe)
    assert moves(seen) == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert [t.cause for t in seen[1:]] == ["open interval elapsed", "probe succeeded"]
    assert not permit(breakers).probe
    assert breakers.status([P])[P].failures == 0


def test_a_failed_probe_opens_the_breaker_again(client: redis.Redis, seen: list[Transition]) -> None:
    breakers = make(client, seen)
    trip(breakers)
    time.sleep(0.55)
    breakers.failure(permit(breakers), "TransientError: timed out")
    assert moves(seen)[-1] == ("half_open", "open")
    assert seen[-1].cause == "probe failed: TransientError: timed out"
    assert denial(breakers).reason == "open"


def test_exactly_one_probe_when_fifty_threads_race(client: redis.Redis, redis_url: str) -> None:
    warm = make(client)
    warm.release(permit(warm))  # load the scripts once, so the race is about the state, not SCRIPT LOAD
    trip(make(client))
    time.sleep(0.55)
    barrier = threading.Barrier(50)
    results: list[Permit | Denial] = []

    def race() -> None:
        own = redis.Redis.from_url(redis_url)  # one client per thread, like separate processes
        breakers = make(own)
        barrier.wait()
        results.append(breakers.acquire(P))
        own.close()

    threads = [threading.Thread(target=race) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    granted = [r for r in results if isinstance(r, Permit)]
    assert len(results) == 50
    assert len(granted) == 1 and granted[0].probe
    assert {r.reason for r in results if isinstance(r, Denial)} == {"probing"}


def test_a_probe_whose_worker_died_is_handed_out_again_after_its_lease(client: redis.Redis) -> None:
    breakers = make(client, limits=ProviderLimits(max_in_flight=5, lease_s=0.3))
    trip(breakers)
    time.sleep(0.55)
    permit(breakers)  # this worker never reports back
    assert denial(breakers).reason == "probing"
    time.sleep(0.35)
    assert permit(breakers).probe


def test_releasing_a_probe_without_a_verdict_frees_it_for_another(client: redis.Redis) -> None:
    breakers = make(client)
    trip(breakers)
    time.sleep(0.55)
    breakers.release(permit(breakers))  # e.g. the request was too large: nothing learnt about the provider
    assert breakers.status([P])[P].state == "half_open"
    assert permit(breakers).probe


def test_threshold_counting_is_atomic_under_concurrency(client: redis.Redis, seen: list[Transition]) -> None:
    breakers = make(client, seen, policy=BreakerPolicy(failure_threshold=5, open_seconds=30))
    permits = [permit(breakers) for _ in range(20)]
    threads = [threading.Thread(target=breakers.failure, args=(p, "boom")) for p in permits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert moves(seen) == [("closed", "open")]
    assert breakers.status([P])[P].failures == 5  # verdicts of permits granted before it opened are ignored


def test_a_late_verdict_from_before_a_transition_changes_nothing(client: redis.Redis) -> None:
    breakers = make(client)
    early = permit(breakers)
    trip(breakers)
    time.sleep(0.55)
    probe = permit(breakers)
    breakers.success(early)  # granted while closed, answered during half-open: not the probe
    assert breakers.status([P])[P].state == "half_open"
    breakers.failure(probe, "boom")
    assert breakers.status([P])[P].state == "open"


def test_disabled_until_enabled_with_an_alert(
    client: redis.Redis, seen: list[Transition], caplog: pytest.LogCaptureFixture
) -> None:
    breakers = make(client, seen)
    caplog.set_level(logging.WARNING, logger="routing.breaker")
    inflight = permit(breakers)
    breakers.disable(P, "ProviderDown: claude: HTTP 401: invalid x-api-key: [redacted]")
    assert "ALERT: provider claude disabled: ProviderDown: claude: HTTP 401" in caplog.text
    refused = denial(breakers)
    assert (refused.reason, refused.retry_in_s) == ("disabled", None)
    assert "switchyard breaker enable claude" in refused.message
    breakers.success(inflight)  # a call that was in flight does not re-enable it
    time.sleep(0.55)  # nor does time
    assert breakers.status([P])[P].state == "disabled"
    breakers.enable(P)
    assert moves(seen) == [("closed", "disabled"), ("disabled", "closed")]
    assert seen[-1].cause == "enabled by an operator"
    assert isinstance(breakers.acquire(P), Permit)


def test_reset_closes_from_any_state(client: redis.Redis, seen: list[Transition]) -> None:
    breakers = make(client, seen)
    trip(breakers)
    breakers.reset(P)
    assert breakers.status([P])[P].state == "closed"
    assert moves(seen) == [("closed", "open"), ("open", "closed")]
    assert isinstance(breakers.acquire(P), Permit)


def test_in_flight_limit_and_its_lease(client: redis.Redis) -> None:
    breakers = make(client, limits=ProviderLimits(max_in_flight=2, lease_s=0.4))
    first, second = permit(breakers), permit(breakers)
    busy = denial(breakers)
    assert busy.reason == "busy" and busy.retry_in_s is not None and busy.retry_in_s <= 0.4
    assert breakers.snapshot([P])[P].in_flight == 2
    breakers.release(first)
    third = permit(breakers)
    assert denial(breakers).reason == "busy"
    time.sleep(0.45)  # the holders of `second` and `third` died: their leases run out
    assert breakers.snapshot([P])[P].in_flight == 0
    permit(breakers)
    breakers.success(second)  # a late verdict after the lease ran out frees nothing twice
    breakers.success(third)
    assert breakers.snapshot([P])[P].in_flight == 1


def test_requests_per_minute(client: redis.Redis) -> None:
    breakers = make(client, limits=ProviderLimits(max_in_flight=10, requests_per_minute=3))
    for _ in range(3):
        breakers.success(permit(breakers))
    refused = denial(breakers)
    assert refused.reason == "rate"
    assert refused.retry_in_s is not None and 59 < refused.retry_in_s <= 60
    state = breakers.snapshot([P])[P]
    assert (state.calls_last_minute, state.requests_per_minute, state.in_flight) == (3, 3, 0)


def test_snapshot_is_the_routers_view(client: redis.Redis) -> None:
    breakers = make(client, limits=ProviderLimits(max_in_flight=5, requests_per_minute=50))
    permit(breakers)
    trip(breakers)
    snap = breakers.snapshot([P, "codex"])
    assert snap[P] == ProviderState(
        name=P,
        breaker="open",
        probe_free=True,
        retry_in_s=snap[P].retry_in_s,
        in_flight=1,
        max_in_flight=5,
        calls_last_minute=4,
        requests_per_minute=50,
    )
    assert 0 < snap[P].retry_in_s <= 0.5
    assert snap["codex"].breaker == "closed" and snap["codex"].max_in_flight == 4  # defaults for the unnamed


def test_transitions_are_recorded_in_sql_with_their_cause(client: redis.Redis, sqlite_url: str) -> None:
    ensure_schema(sqlite_url)
    breakers = Breakers(client, POLICY, {}, on_transition=lambda t: record_transition(sqlite_url, t))
    trip(breakers)
    time.sleep(0.55)
    breakers.failure(permit(breakers), "TransientError: HTTP 503")
    breakers.disable(P, "ProviderDown: HTTP 403")
    history = transition_history(sqlite_url, P)
    assert [(h["from"], h["to"]) for h in reversed(history)] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "disabled"),
    ]
    assert history[0]["cause"] == "ProviderDown: HTTP 403"
    assert history[1]["cause"] == "probe failed: TransientError: HTTP 503"


def test_the_status_view_shows_the_last_transition(redis_url: str, client: redis.Redis) -> None:
    fleet = load_fleet(DEFAULT_FLEET_FILE)
    breakers = Breakers.from_fleet(client, fleet)
    breakers.disable(P, "ProviderDown: HTTP 401")
    rows = {row["provider"]: row for row in providers_view(redis_url, fleet)}
    assert set(rows) == set(fleet.providers)
    assert rows[P]["state"] == "disabled"
    assert rows[P]["last_transition"]["cause"] == "ProviderDown: HTTP 401"
    assert rows[P]["max_in_flight"] == fleet.providers[P].max_in_flight


def test_fails_closed_when_redis_cannot_be_reached() -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    breakers = make(client)
    with pytest.raises(StateUnavailable, match="did not answer"):
        breakers.acquire(P)
    with pytest.raises(StateUnavailable):
        breakers.status([P])
    with pytest.raises(StateUnavailable) as caught:
        providers_view(url, load_fleet(DEFAULT_FLEET_FILE))
    assert "s3cret" not in str(caught.value)
    assert "SWITCHYARD_STATE_URL" in str(caught.value)


SWITCHYARD = str(Path(sys.executable).parent / "switchyard")


def cli_env(tmp_path: Path, state_url: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    base.update(SWITCHYARD_HOME=str(tmp_path / "home"), SWITCHYARD_STATE_URL=state_url, COLUMNS="250")
    return base


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SWITCHYARD, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_status_providers_and_breaker_enable_on_the_cli(client: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    env = cli_env(tmp_path, redis_url)
    breakers = Breakers.from_fleet(client, load_fleet(DEFAULT_FLEET_FILE))
    breakers.disable(P, "ProviderDown: claude: HTTP 401: invalid x-api-key: [redacted]")
    breakers.acquire("codex")
    done = cli(env, "status", "--providers", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["provider"]: row for row in json.loads(done.stdout)["providers"]}
    assert rows[P]["state"] == "disabled"
    assert rows[P]["last_transition"]["from"] == "closed"
    assert (rows["codex"]["in_flight"], rows["codex"]["calls_last_minute"]) == (1, 1)
    table = cli(env, "status", "--providers")
    assert table.returncode == 0, table.stderr
    assert "closed → disabled" in table.stdout and "1/8" in table.stdout
    enabled = cli(env, "breaker", "enable", P)
    assert enabled.returncode == 0, enabled.stderr
    assert "disabled → closed" in enabled.stdout
    database = f"sqlite:///{tmp_path / 'home' / 'development' / 'switchyard.db'}"
    assert [(h["from"], h["to"], h["cause"]) for h in transition_history(database, P)] == [
        ("disabled", "closed", "enabled by an operator")
    ]
    refused = cli(env, "breaker", "enable", "gemini")
    assert refused.returncode == 2 and "unknown provider 'gemini'" in refused.stderr


def test_status_providers_names_a_state_redis_that_is_away(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = cli(cli_env(tmp_path, url), "status", "--providers")
    assert done.returncode == 3, done.stderr
    assert f"cannot read provider state from {url}" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_api_serves_the_same_rows(client: redis.Redis, redis_url: str, sqlite_url: str, tmp_path: Path) -> None:
    Breakers.from_fleet(client, load_fleet(DEFAULT_FLEET_FILE)).disable(P, "ProviderDown: HTTP 403")
    settings = Settings(home=tmp_path / "home", database_url=sqlite_url, state_url=redis_url)
    with TestClient(create_app(build_context(settings))) as api:
        rows = {row["provider"]: row for row in api.get("/api/breakers").json()["providers"]}
    assert rows[P]["state"] == "disabled" and rows[P]["last_transition"]["cause"] == "ProviderDown: HTTP 403"
    away = Settings(home=tmp_path / "home", database_url=sqlite_url, state_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(build_context(away))) as api:
        response = api.get("/api/breakers")
    assert response.status_code == 503
    assert "cannot read provider state" in response.json()["error"]


def test_a_failing_provider_gets_no_more_calls_in_flight_than_could_fail_before_it_opens(client: redis.Redis) -> None:
    breakers = make(client)
    breakers.failure(permit(breakers), "TransientError: HTTP 500")  # 1 failure of 3
    first, _second = permit(breakers), permit(breakers)  # 1 failure + 2 in flight: at most 3 failures
    assert denial(breakers).reason == "suspect"  # a third call in flight could fail after the breaker opens
    breakers.success(first)  # a success clears the failures: healthy again, limited only by its slots
    assert all(isinstance(breakers.acquire(P), Permit) for _ in range(10))


# A worker that takes two in-flight slots (and the half-open probe) and is killed with -9 in the middle of its calls.
HOLD_SLOTS = """
import sys, time
import redis
from routing.breaker import Breakers
from routing.permits import Permit, ProviderLimits
from switchyard.fleet_models import BreakerPolicy
breakers = Breakers(redis.Redis.from_url(sys.argv[1]), BreakerPolicy(), {sys.argv[2]: ProviderLimits(max_in_flight=3)})
got = [breakers.acquire(sys.argv[2]) for _ in range(2)]
print("held" if all(isinstance(p, Permit) for p in got) else f"refused {got}", flush=True)
time.sleep(600)
"""


def test_slots_of_a_killed_worker_are_freed_at_once_and_live_ones_kept(client: redis.Redis, redis_url: str) -> None:
    breakers = make(client, limits=ProviderLimits(max_in_flight=3, lease_s=600))
    worker = subprocess.Popen(
        [sys.executable, "-c", HOLD_SLOTS, redis_url, P], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "held"
    finally:
        os.kill(worker.pid, 9)
        worker.wait(timeout=60)
        if worker.stdout is not None:
            worker.stdout.close()
    mine = permit(breakers)  # this process's call, alive
    assert denial(breakers).reason == "busy"  # 2 of a dead process + 1 live: full for the next 600 s
    assert breakers.reclaim_gone(P) == 2
    assert breakers.snapshot([P])[P].in_flight == 1
    assert breakers.reclaim_gone(P) == 0
    permit(breakers)  # room again
    breakers.success(mine)
