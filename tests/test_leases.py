"""Task leases: the pure claim rule, then the store against SQLite and PostgreSQL (a live lease blocks a
second claim, exactly one of many concurrent claims wins, renewals, expiry, the detector's re-send), the
renewer thread keeping a lease alive through a long run, the sweeper releasing a dead worker's hold when its
task's lease runs out, and the fleet limits and beat schedule."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import REPO, patient
from pydantic import ValidationError
from sqlalchemy import update

import celeryconfig
from routing.ledger import Ledger
from store import leases, repo
from store.db import dispose_all, session_scope
from store.leases import LeaseView, decide, resend_token
from store.migrate import ensure_schema
from store.models import Spend, Task
from switchyard.fleet import BudgetConfig, LimitsConfig, load_fleet
from switchyard.processes import process_gone, this_host
from switchyard.settings import Settings
from tasks.lease import Leases, resend_expired

FLEET = load_fleet(REPO / "switchyard.toml")
NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
LATER, EARLIER = NOW + timedelta(seconds=30), NOW - timedelta(seconds=1)


def view(status: str, owner: str | None = "w1", until: datetime | None = LATER) -> LeaseView:
    return LeaseView("t", "pr_review", "pr_review", status, owner, until)


# --- the rule ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lease", "token", "verdict"),
    [
        (None, None, "missing"),
        (view("succeeded"), None, "finished"),
        (view("failed", until=EARLIER), "w1", "finished"),  # a finished task is never run again, token or not
        (view("queued", None, None), None, "take"),
        (view("queued", "w1"), None, "take"),  # queued: nobody runs it, whatever an old lease says
        (view("running", None, None), None, "take"),  # never leased (a row from before leases)
        (view("deferred", None, None), None, "take"),  # released from waiting for its dependencies
        (view("running"), None, "busy"),  # a live lease: the broker's redelivery, a duplicate
        (view("running"), "w2", "busy"),  # a token of an older owner
        (view("deferred"), None, "busy"),  # deferred under a lease: its retry's message is expected
        (view("running"), "w1", "take"),  # the owner's own retry (database away), or the detector's copy
        (view("deferred"), "w1", "take"),  # the deferral's retry
        (view("running", until=EARLIER), None, "take"),  # the lease ran out: its worker is gone
        (view("running", until=NOW), "w2", "take"),  # ran out exactly now
        (view("deferred", until=EARLIER), None, "take"),
        (view("running", until=NOW.replace(tzinfo=None) + timedelta(seconds=5)), None, "busy"),  # SQLite: naive UTC
    ],
)
def test_who_may_take_a_task(lease: LeaseView | None, token: str | None, verdict: str) -> None:
    assert decide(lease, token, NOW) == verdict


def test_a_resend_keeps_the_token_already_out_and_replaces_a_runs_name() -> None:
    first = resend_token("host/12/abc")
    assert first.startswith(leases.RESENT) and first != resend_token("host/12/abc")
    assert resend_token(first) == first
    assert resend_token(None).startswith(leases.RESENT)


def test_the_limits_refuse_a_lease_that_one_late_renewal_would_end() -> None:
    assert LimitsConfig().lease_s == 60 and LimitsConfig().lease_check_every_s == 15
    with pytest.raises(ValidationError, match="at most half of lease_s"):
        LimitsConfig(lease_s=20, lease_renew_every_s=15)
    with pytest.raises(ValidationError):
        LimitsConfig(lease_check_every_s=0)


def test_every_group_has_a_lease_detector_on_its_own_queue(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, broker_url="redis://127.0.0.1:1/0")
    schedule = celeryconfig.build(settings, FLEET)["beat_schedule"]
    checks = {k: v for k, v in schedule.items() if k.startswith("recover-leases-")}
    assert {v["args"][0] for v in checks.values()} == {g.name for g in FLEET.groups}
    for entry in checks.values():
        assert entry["task"] == celeryconfig.RECOVER_LEASES_TASK
        assert entry["schedule"] == FLEET.limits.lease_check_every_s
        assert entry["options"]["queue"] == FLEET.group(entry["args"][0]).queue


# --- the store -----------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    database: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    ensure_schema(database)
    yield database
    dispose_all()


def make_task(url: str, task_id: str = "t1", group: str = "pr_review") -> str:
    with session_scope(url) as session:
        repo.create_task(
            session, task_id=task_id, kind="pr_review", group=group, environment="dev1", stage="dev", title="",
            payload={},
        )  # fmt: skip
    return task_id


def take(
    url: str, task_id: str, owner: str, *, token: str | None = None, now: datetime = NOW, lease_s: float = 60
) -> str:
    with session_scope(url) as session:
        until = now + timedelta(seconds=lease_s)
        return leases.take(session, task_id=task_id, owner=owner, token=token, until=until, now=now)


def row(url: str, task_id: str) -> Task:
    with session_scope(url) as session:
        found = session.get(Task, task_id)
        assert found is not None
        session.expunge(found)
        return found


def test_a_live_lease_blocks_a_second_claim_until_it_runs_out(url: str) -> None:
    task_id = make_task(url)
    assert take(url, task_id, "w1") == "take"
    claimed = row(url, task_id)
    assert (claimed.status, claimed.lease_owner, claimed.started_at is not None) == ("running", "w1", True)
    assert take(url, task_id, "w2", now=NOW + timedelta(seconds=59)) == "busy"  # the duplicate ends quietly
    assert take(url, task_id, "w2", token="w0", now=NOW + timedelta(seconds=59)) == "busy"
    assert row(url, task_id).lease_owner == "w1"
    assert take(url, task_id, "w3", now=NOW + timedelta(seconds=61)) == "take"  # w1 died: taken over
    assert row(url, task_id).lease_owner == "w3"
    with session_scope(url) as session:
        repo.finish_task(session, task_id=task_id, status="succeeded")
    assert take(url, task_id, "w4", now=NOW + timedelta(hours=2)) == "finished"
    assert take(url, "nope", "w4") == "missing"


def test_renewing_keeps_the_lease_and_a_lost_lease_says_so(url: str) -> None:
    task_id = make_task(url)
    take(url, task_id, "w1")
    with session_scope(url) as session:
        assert leases.renew(session, task_id=task_id, owner="w1", until=NOW + timedelta(seconds=200))
    assert take(url, task_id, "w2", now=NOW + timedelta(seconds=100)) == "busy"  # renewed past the first end
    assert take(url, task_id, "w2", now=NOW + timedelta(seconds=201)) == "take"
    with session_scope(url) as session:
        assert not leases.renew(session, task_id=task_id, owner="w1", until=NOW + timedelta(seconds=400))


def test_exactly_one_of_many_concurrent_claims_wins(url: str) -> None:
    ids = [make_task(url, f"c{i}") for i in range(5)]
    for task_id in ids:
        barrier = threading.Barrier(8)

        def claim(n: int, task_id: str = task_id, barrier: threading.Barrier = barrier) -> str:
            barrier.wait()
            return take(url, task_id, f"w{n}", now=datetime.now(UTC))

        with ThreadPoolExecutor(8) as pool:
            verdicts = list(pool.map(claim, range(8)))
        assert sorted(verdicts) == ["busy"] * 7 + ["take"], verdicts


def test_the_detector_resends_expired_tasks_of_its_group_once(url: str) -> None:
    limits = FLEET.limits
    dead, alive, other = make_task(url, "dead"), make_task(url, "alive"), make_task(url, "other", group="pr_impl")
    for task_id in (dead, alive, other):
        take(url, task_id, f"owner-{task_id}", now=NOW)
    with session_scope(url) as session:
        leases.renew(session, task_id=alive, owner="owner-alive", until=NOW + timedelta(seconds=300))
    sent: list[tuple[str, str, str]] = []
    later = NOW + timedelta(seconds=90)

    def send(task_id: str, kind: str, token: str) -> None:
        sent.append((task_id, kind, token))

    assert resend_expired(url, limits, send, group="pr_review", now=later) == [dead]
    ((_, kind, token),) = sent
    assert kind == "pr_review" and token.startswith(leases.RESENT)
    assert resend_expired(url, limits, send, group="pr_review", now=later) == []  # its message has time now
    assert take(url, dead, "w2", now=later) == "busy"  # a plain duplicate does not take it from the message
    assert take(url, dead, "w3", token=token, now=later) == "take"  # the re-sent message does
    with session_scope(url) as session:
        assert not leases.renew(session, task_id=dead, owner="owner-dead", until=later)  # the old run lost it
    much_later = later + timedelta(seconds=limits.lease_s * 5)
    assert resend_expired(url, limits, send, group="pr_review", now=much_later) == [dead, alive]
    assert sent[-1][2] != token  # a new owner's lease ran out: a new token


def test_a_dead_workers_hold_is_released_when_its_lease_runs_out(url: str) -> None:
    fleet = FLEET.model_copy(update={"budgets": [BudgetConfig(scope="all", window="month", cap_usd=1.0)]})
    clock = [NOW]
    ledger = Ledger(url, fleet, now=lambda: clock[0])
    dead, alive, unleased = make_task(url, "dead"), make_task(url, "alive"), make_task(url, "unleased")
    take(url, dead, "w1", lease_s=60)
    take(url, alive, "w2", lease_s=6000)
    place = {"provider": "claude", "model": "claude-sonnet-5", "group": "pr_review", "environment": "dev1"}
    for task_id in (dead, alive, unleased):
        ledger.hold(task_id=task_id, attempt=1, stage="dev", micros=100_000, **place)
    clock[0] = NOW + timedelta(seconds=61)  # long before the fixed age limit (task time limit + a minute)
    assert ledger.sweep(older_than=timedelta(seconds=960)) == 1
    with session_scope(url) as session:
        states = {s.task_id: s.state for s in session.query(Spend)}
    assert states == {"dead": "released", "alive": "held", "unleased": "held"}
    clock[0] = NOW + timedelta(seconds=961)
    assert ledger.sweep(older_than=timedelta(seconds=960)) == 1  # no lease: the age limit, as before


# --- the renewer ---------------------------------------------------------------------------------------


def test_the_renewer_keeps_a_long_runs_lease_alive_and_lets_it_lapse_after(sqlite_url: str) -> None:
    ensure_schema(sqlite_url)
    task_id = make_task(sqlite_url)
    limits = LimitsConfig(lease_s=1.0, lease_renew_every_s=0.2, lease_check_every_s=0.5)
    held = Leases(sqlite_url, limits)
    try:
        verdict, owner = held.take(task_id, None)
        assert verdict == "take"
        with held.holding(task_id, owner):  # a "call" four leases long
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:
                assert Leases(sqlite_url, limits).take(task_id, None)[0] == "busy"
                time.sleep(0.1)
        lapsed = time.monotonic() + patient(30)
        while Leases(sqlite_url, limits).take(task_id, None)[0] != "take":
            assert time.monotonic() < lapsed, "the lease never ran out once the run ended"
            time.sleep(0.1)
    finally:
        held.close()
        dispose_all()


def test_a_deferral_keeps_the_task_for_its_retry_message(url: str) -> None:
    task_id = make_task(url)
    held = Leases(url, FLEET.limits)
    verdict, owner = held.take(task_id, None)
    assert verdict == "take"
    with session_scope(url) as session:  # what the attempt loop does before raising Deferred
        repo.set_deferred(session, task_id=task_id, reason="waiting in the merge queue")
    assert held.extend(task_id, owner, 20 + FLEET.limits.lease_s)
    assert held.take(task_id, None)[0] == "busy"  # a stray copy waits for the retry, which carries the lease
    assert held.take(task_id, owner)[0] == "take"
    assert row(url, task_id).status == "running"
    assert not held.extend(task_id, owner, 10)  # the retry's run owns it now


def test_a_lease_taken_over_is_no_longer_the_runs(sqlite_url: str) -> None:
    ensure_schema(sqlite_url)
    task_id = make_task(sqlite_url)
    mine = Leases(sqlite_url, LimitsConfig(lease_s=60, lease_renew_every_s=15, lease_check_every_s=15))
    verdict, owner = mine.take(task_id, None)
    assert verdict == "take"
    with mine.holding(task_id, owner):
        assert mine.still_mine(task_id, owner)
        with session_scope(sqlite_url) as session:  # another worker took it over after the lease ran out
            session.execute(update(Task).where(Task.id == task_id).values(lease_owner="elsewhere/1/x"))
        assert mine.renew_all() == [task_id]
        assert not mine.still_mine(task_id, owner)


def test_a_lease_whose_process_on_this_host_is_gone_is_sent_again_at_once(url: str) -> None:
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait(timeout=60)  # a process that existed and is gone (reaped: its pid names nothing now)
    host = this_host()
    gone, alive = make_task(url, "gone"), make_task(url, "alive")
    elsewhere, other_group = make_task(url, "elsewhere"), make_task(url, "other", group="pr_impl")
    now = datetime.now(UTC)
    take(url, gone, f"{host}/{dead_pid.pid}/aaaa", now=now)
    take(url, alive, f"{host}/{os.getpid()}/bbbb", now=now)
    take(url, elsewhere, f"another-host/{dead_pid.pid}/cccc", now=now)  # not ours to look into
    take(url, other_group, f"{host}/{dead_pid.pid}/dddd", now=now)
    sent: list[str] = []
    got = resend_expired(url, FLEET.limits, lambda i, _k, _t: sent.append(i), group="pr_review", now=now)
    assert got == sent == [gone]  # long before its lease (60 s) runs out
    assert row(url, gone).lease_owner.startswith(leases.RESENT)  # type: ignore[union-attr]
    assert resend_expired(url, FLEET.limits, lambda i, _k, _t: sent.append(i), group="pr_review", now=now) == []
    assert process_gone(f"{host}/{dead_pid.pid}/x", host) and not process_gone(f"{host}/{os.getpid()}/x", host)
    assert not process_gone("resent:abc", host) and not process_gone(None, host)
