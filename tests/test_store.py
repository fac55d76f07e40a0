"""store.repo on real databases: each test runs on SQLite (a file) and PostgreSQL, schema by migration."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from routing.ledger import Ledger
from store import repo
from store.db import dispose_all, session_scope
from store.migrate import upgrade
from store.models import Attempt, Environment, Group, Spend, Stage, Task
from store.tries import TryRecord, record_try, tries_of
from switchyard.errors import NotFound
from switchyard.fleet import load_fleet
from switchyard.settings import DEFAULT_FLEET_FILE
from switchyard.usage import Usage

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> Iterator[str]:
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    upgrade(url)
    yield url
    dispose_all()


def new_task(url: str, task_id: str = "t1", **overrides: Any) -> None:
    fields: dict[str, Any] = {
        "kind": "pr_review",
        "group": "pr_review",
        "environment": "dev1",
        "stage": "dev",
        "title": "review #12",
        "payload": {"pr": 12},
    }
    with session_scope(url) as session:
        repo.create_task(session, task_id=task_id, **(fields | overrides))


def run(url: str, action: Callable[..., Any], **kwargs: Any) -> Any:
    """``action(session, **kwargs)`` in its own committed session."""
    with session_scope(url) as session:
        return action(session, **kwargs)


def begin(url: str, task_id: str = "t1", attempt: int = 1, provider: str = "claude") -> Attempt:
    result: Attempt = run(
        url,
        repo.begin_attempt,
        task_id=task_id,
        attempt=attempt,
        provider=provider,
        model="m",
        transport="api",
    )
    return result


def charge(url: str, micros: int, task_id: str = "t1", attempt: int = 1) -> Spend:
    """Charge (task, attempt) the way the attempt loop does: a hold (nothing to reserve here), then settle."""
    ledger = Ledger(url, load_fleet(DEFAULT_FLEET_FILE))
    place = {"provider": "claude", "model": "m", "group": "pr_review", "environment": "dev1", "stage": "dev"}
    ledger.hold(task_id=task_id, attempt=attempt, micros=0, **place)
    ledger.settle(task_id=task_id, attempt=attempt, charged_micros=micros, price_version="claude/m@1")
    with session_scope(url) as session:
        row = session.scalars(select(Spend).where(Spend.task_id == task_id, Spend.attempt == attempt)).one()
        session.expunge(row)
        return row


def task(url: str, task_id: str = "t1") -> Task:
    found: Task | None = run(url, repo.get_task, task_id=task_id)
    assert found is not None
    return found


def count(url: str, model: type[Any]) -> int:
    with session_scope(url) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


# --- tasks ---------------------------------------------------------------------------------------------


def test_a_task_travels_to_exactly_one_terminal_status(db: str) -> None:
    new_task(db)
    assert task(db).status == "queued"
    claimed = run(db, repo.claim_task, task_id="t1")
    assert claimed.status == "running" and claimed.started_at is not None
    begin(db)
    run(db, repo.finish_attempt, task_id="t1", attempt=1, status="succeeded", answer="LGTM")
    charge(db, 1_500)
    finished = run(db, repo.finish_task, task_id="t1", status="succeeded", provider="claude", model="m")
    assert finished is True
    again = run(db, repo.finish_task, task_id="t1", status="failed", reason="late redelivery")
    assert again is False
    final = task(db)
    assert (final.status, final.reason, final.provider, final.attempts) == ("succeeded", None, "claude", 1)
    assert final.finished_at is not None and final.cost_micros == 1_500
    assert run(db, repo.claim_task, task_id="t1") is None


def test_claiming_a_running_task_resumes_it(db: str) -> None:
    new_task(db)
    first = run(db, repo.claim_task, task_id="t1")
    second = run(db, repo.claim_task, task_id="t1")
    assert second is not None and second.status == "running"
    assert second.started_at == first.started_at


def test_a_deferred_task_is_claimed_again_and_keeps_its_first_start(db: str) -> None:
    new_task(db)
    started = run(db, repo.claim_task, task_id="t1").started_at
    run(db, repo.set_deferred, task_id="t1", reason="budget: hourly cap, retry in 60 s")
    assert (task(db).status, task(db).reason) == ("deferred", "budget: hourly cap, retry in 60 s")
    resumed = run(db, repo.claim_task, task_id="t1")
    assert (resumed.status, resumed.reason, resumed.started_at) == ("running", None, started)


def test_a_terminal_task_is_not_deferred(db: str) -> None:
    new_task(db)
    run(db, repo.finish_task, task_id="t1", status="cancelled")
    run(db, repo.set_deferred, task_id="t1", reason="too late")
    assert task(db).status == "cancelled"


def test_finish_refuses_a_status_that_is_not_terminal(db: str) -> None:
    new_task(db)
    with pytest.raises(ValueError, match="not terminal"):
        run(db, repo.finish_task, task_id="t1", status="running")
    assert task(db).status == "queued"


def test_unknown_tasks_are_not_found(db: str) -> None:
    assert run(db, repo.get_task, task_id="nope") is None
    with pytest.raises(NotFound):
        run(db, repo.claim_task, task_id="nope")
    with pytest.raises(NotFound):
        run(db, repo.finish_task, task_id="nope", status="failed")
    with pytest.raises(NotFound):
        begin(db, task_id="nope")


def test_nothing_is_written_when_the_callers_session_rolls_back(db: str) -> None:
    new_task(db)
    with pytest.raises(RuntimeError), session_scope(db) as session:
        repo.begin_attempt(session, task_id="t1", attempt=1, provider="claude", model="m", transport="api")
        repo.finish_task(session, task_id="t1", status="failed")
        raise RuntimeError("the caller fails after the repo calls")
    assert count(db, Attempt) == 0
    assert task(db).status == "queued"


def test_exactly_one_of_racing_finishes_wins(db: str) -> None:
    new_task(db)
    statuses = ["succeeded", "failed", "cancelled", "rejected", "no_provider", "budget_exhausted"]
    outcomes = race(lambda i: run(db, repo.finish_task, task_id="t1", status=statuses[i]), len(statuses))
    assert outcomes.count(True) == 1
    assert task(db).status == statuses[outcomes.index(True)]


def test_mark_lost_lists_tasks_running_too_long(db: str) -> None:
    for task_id in ("old", "new", "queued"):
        new_task(db, task_id)
    run(db, repo.claim_task, task_id="old")
    later = datetime.now(UTC) + timedelta(seconds=5)
    run(db, repo.claim_task, task_id="new")
    with session_scope(db) as session:
        session.get_one(Task, "new").started_at = later + timedelta(seconds=5)
    assert run(db, repo.mark_lost, older_than=later) == ["old"]
    assert run(db, repo.mark_lost, older_than=later.replace(tzinfo=None)) == ["old"]


# --- attempts and charges ------------------------------------------------------------------------------


def test_begin_attempt_returns_the_stored_row_on_redelivery(db: str) -> None:
    new_task(db)
    first = begin(db, provider="claude")
    again = begin(db, provider="ollama")
    assert (again.id, again.provider, again.status) == (first.id, "claude", "running")
    assert run(db, repo.stored_attempt, task_id="t1", attempt=1).id == first.id
    assert run(db, repo.stored_attempt, task_id="t1", attempt=2) is None


def test_finish_attempt_stores_usage_and_counts_once(db: str) -> None:
    new_task(db)
    begin(db)
    usage = Usage(input_tokens=1200, cached_input_tokens=300, output_tokens=450, reasoning_tokens=50)
    done = run(
        db,
        repo.finish_attempt,
        task_id="t1",
        attempt=1,
        status="succeeded",
        usage=usage,
        cost_micros=9_000,
        price_version="claude/m@1",
        answer="LGTM",
        latency_ms=812.5,
    )
    assert (done.status, done.input_tokens, done.cached_input_tokens, done.output_tokens) == (
        "succeeded",
        1200,
        300,
        450,
    )
    assert (done.cost_micros, done.answer, done.latency_ms) == (9_000, "LGTM", 812.5)
    again = run(db, repo.finish_attempt, task_id="t1", attempt=1, status="failed", error="redelivered")
    assert (again.status, again.error) == ("succeeded", None)
    assert task(db).attempts == 1
    with pytest.raises(ValueError, match="attempt status"):
        run(db, repo.finish_attempt, task_id="t1", attempt=1, status="running")


def test_an_answered_attempt_keeps_its_answer_and_takes_one_verdict(db: str) -> None:
    new_task(db)
    begin(db)
    usage = Usage(input_tokens=10, output_tokens=20)
    answered = run(
        db,
        repo.finish_attempt,
        task_id="t1",
        attempt=1,
        status="answered",
        usage=usage,
        cost_micros=77,
        answer="diff --git ...",
        latency_ms=5.0,
    )
    assert (answered.status, answered.answer, task(db).attempts) == ("answered", "diff --git ...", 1)
    replayed = run(db, repo.finish_attempt, task_id="t1", attempt=1, status="answered", answer="other")
    assert replayed.answer == "diff --git ..."
    failed = run(
        db,
        repo.finish_attempt,
        task_id="t1",
        attempt=1,
        status="failed",
        error_class="PatchRejected",
        error="does not apply",
    )
    assert (failed.status, failed.error_class, failed.answer) == ("failed", "PatchRejected", "diff --git ...")
    assert (failed.input_tokens, failed.output_tokens, failed.cost_micros) == (10, 20, 77)
    late = run(db, repo.finish_attempt, task_id="t1", attempt=1, status="succeeded")
    assert (late.status, late.error, task(db).attempts) == ("failed", "does not apply", 1)


def test_racing_begin_attempts_store_one_row(db: str) -> None:
    new_task(db)
    rows = race(lambda i: begin(db, provider=f"p{i}"), 8)
    assert len({row.id for row in rows}) == 1
    assert count(db, Attempt) == 1


def test_a_duplicate_insert_waits_for_the_first_and_returns_its_row(db: str) -> None:
    """Thread A inserts and holds its transaction open; B inserts the same (task, attempt), waits on A's
    uncommitted row (PostgreSQL) or on the write lock (SQLite), then gets A's row instead of an error."""
    new_task(db)
    inserted, rows = threading.Event(), {}

    def first() -> None:
        with session_scope(db) as session:
            rows["a"] = repo.begin_attempt(
                session, task_id="t1", attempt=1, provider="claude", model="m", transport="api"
            )
            inserted.set()
            time.sleep(0.3)

    thread = threading.Thread(target=first)
    thread.start()
    assert inserted.wait(10)
    started = time.monotonic()
    rows["b"] = begin(db, provider="ollama")
    waited = time.monotonic() - started
    thread.join()
    assert rows["a"].id == rows["b"].id and rows["b"].provider == "claude"
    assert waited > 0.15, "B did not wait for A: the race this test is about did not happen"
    assert count(db, Attempt) == 1


def test_a_charge_is_recorded_once(db: str) -> None:
    new_task(db)
    first = charge(db, 2_000)
    again = charge(db, 7_000)
    assert (again.id, again.charged_micros, again.state) == (first.id, 2_000, "settled")
    assert count(db, Spend) == 1


def test_racing_charges_record_one_row(db: str) -> None:
    new_task(db)
    rows = race(lambda i: charge(db, 1_000 + i), 6)
    assert len({(row.id, row.charged_micros) for row in rows}) == 1
    assert count(db, Spend) == 1


def test_a_held_row_is_settled_by_its_charge(db: str) -> None:
    new_task(db)
    with session_scope(db) as session:
        session.add(
            Spend(
                task_id="t1",
                attempt=1,
                provider="claude",
                model="m",
                group="pr_review",
                environment="dev1",
                stage="dev",
                state="held",
                held_micros=50_000,
            )
        )
    settled = charge(db, 12_345)
    assert (settled.state, settled.held_micros, settled.charged_micros) == ("settled", 50_000, 12_345)
    assert settled.settled_at is not None
    assert charge(db, 99).charged_micros == 12_345


def test_task_cost_is_the_sum_of_its_charges(db: str) -> None:
    new_task(db)
    new_task(db, "other")
    charge(db, 1_250_000, attempt=1)
    charge(db, 300, attempt=2)
    charge(db, 5, attempt=3)
    charge(db, 777, task_id="other")
    assert run(db, repo.finish_task, task_id="t1", status="failed", reason="all rungs failed")
    assert task(db).cost_micros == 1_250_305


# --- results, environments, groups ---------------------------------------------------------------------


def test_upsert_result_inserts_then_updates(db: str) -> None:
    new_task(db)
    first = run(
        db,
        repo.upsert_result,
        environment="dev1",
        stage="dev",
        task_id="t1",
        kind="pr_review",
        status="running",
        summary="",
        data={},
    )
    second = run(
        db,
        repo.upsert_result,
        environment="dev1",
        stage="dev",
        task_id="t1",
        kind="pr_review",
        status="succeeded",
        summary="approved",
        data={"verdict": "approve", "comments": ["nit"]},
    )
    assert second.id == first.id
    assert (second.status, second.summary) == ("succeeded", "approved")
    assert second.data == {"verdict": "approve", "comments": ["nit"]}
    assert second.updated_at >= first.updated_at
    other_stage = run(
        db,
        repo.upsert_result,
        environment="dev1",
        stage="qa",
        task_id="t1",
        kind="pr_review",
        status="succeeded",
        summary="",
        data={},
    )
    assert other_stage.id != first.id


def test_upsert_environment_replaces_its_stages(db: str) -> None:
    def env(port: int, stages: list[tuple[str, str]]) -> None:
        run(
            db,
            repo.upsert_environment,
            name="dev1",
            path="/ws/dev1",
            branch="env/dev1",
            port=port,
            check_command="make test",
            repository="/src/repo",
            stages=stages,
        )

    env(8081, [("dev", "env/dev1"), ("qa", "env/dev1-qa"), ("staging", "env/dev1-staging")])
    created = run(
        db,
        repo.upsert_environment,
        name="dev2",
        path="/ws/dev2",
        branch="env/dev2",
        port=8082,
        check_command="true",
        repository="/src/repo",
        stages=[("dev", "env/dev2")],
    ).created_at
    env(9000, [("qa", "env/dev1-qa2"), ("dev", "env/dev1")])
    with session_scope(db) as session:
        stages = session.execute(
            select(Stage.environment, Stage.name, Stage.position, Stage.branch).order_by(
                Stage.environment, Stage.position
            )
        ).all()
        assert session.get_one(Environment, "dev1").port == 9000
        assert session.get_one(Environment, "dev2").created_at == created
    assert [tuple(row) for row in stages] == [
        ("dev1", "qa", 0, "env/dev1-qa2"),
        ("dev1", "dev", 1, "env/dev1"),
        ("dev2", "dev", 0, "env/dev2"),
    ]


def test_sync_groups_makes_the_table_equal_to_the_fleet(db: str) -> None:
    fleet = load_fleet(REPO / "switchyard.toml")
    with session_scope(db) as session:
        session.add(Group(name="retired", queue="retired", sessions=1, kinds=["plan"], ladder=["claude"]))
    run(db, repo.sync_groups, fleet=fleet)
    smaller = fleet.model_copy(
        update={"groups": [g.model_copy(update={"sessions": 9}) if g.name == "pr_review" else g for g in fleet.groups]}
    )
    run(db, repo.sync_groups, fleet=smaller)
    with session_scope(db) as session:
        rows = {g.name: (g.queue, g.sessions, g.kinds, g.ladder) for g in session.scalars(select(Group))}
    expected = {g.name: (g.queue, g.sessions, list(g.kinds), list(g.ladder)) for g in smaller.groups}
    assert rows == expected
    assert rows["pr_review"] == ("pr_review", 9, ["pr_review"], ["claude", "ollama"])
    assert rows["dev_workers"][3] == ["ollama", "codex"]


def race(action: Callable[[int], Any], threads: int) -> list[Any]:
    """Run ``action(i)`` in ``threads`` threads released together; results in order, errors re-raised."""
    barrier = threading.Barrier(threads)

    def released(i: int) -> Any:
        barrier.wait(timeout=10)
        return action(i)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(released, i) for i in range(threads)]
        return [future.result(timeout=30) for future in futures]


def test_a_try_stored_twice_is_on_record_once(db: str) -> None:
    new_task(db)
    begin(db)
    now = datetime.now(UTC)
    for _ in range(2):  # the store tried again after a commit whose answer was lost
        with session_scope(db) as session:
            record_try(session, task_id="t1", attempt=1, provider="claude", record=TryRecord(1, now, now, "succeeded"))
    with session_scope(db) as session:
        record_try(session, task_id="t1", attempt=1, provider="claude", record=TryRecord(2, now, now, "succeeded"))
        assert [t["try"] for t in tries_of(session, task_id="t1")[1]] == [1, 2]
