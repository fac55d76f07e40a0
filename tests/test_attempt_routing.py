"""The attempt loop with the real router, ledger (SQLite) and shared breaker (Redis), in process: deferral
with the breaker's countdown, the deadline turning it into a terminal status, budgets that degrade to a free
provider or exhaust a kind that has none, and a call a dead worker left open."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_kit import detail, factory, make_context

from routing.permits import Permit
from simulator.server import BackgroundSimulator
from store import repo
from store.costs import UNKNOWN_COST
from store.db import session_scope
from store.models import Spend
from tasks.attempt import Deferred, Runner
from tasks.context import Context
from tasks.submit import submit


@pytest.fixture
def ctx(tmp_path: Path, server: BackgroundSimulator, redis_url: str, sqlite_url: str) -> Context:
    return make_context(tmp_path, server.url, redis_url, sqlite_url)


def runner(ctx: Context) -> Runner:
    return Runner(ctx, make_provider=factory(), sleep=lambda _: None)


def trip(ctx: Context, provider: str) -> None:
    breakers = ctx.breakers()
    for _ in range(ctx.fleet.breaker.failure_threshold):
        permit = breakers.acquire(provider)
        assert isinstance(permit, Permit), permit
        breakers.failure(permit, "TransientError: HTTP 500 (test)")
    assert breakers.status([provider])[provider].state == "open"


def integ(ctx: Context, **extra: object) -> str:
    request = {"kind": "pr_integ", "environment": "dev1", "branch": "feature/sample-1", **extra}
    return submit(request, context=ctx)


def test_an_open_breaker_defers_the_task_with_its_countdown(ctx: Context) -> None:
    trip(ctx, "ollama")  # pr_integ's only rung
    task_id = integ(ctx)
    with pytest.raises(Deferred) as deferred:
        runner(ctx).run(task_id)
    assert 1 <= deferred.value.countdown_s <= ctx.fleet.limits.max_defer_countdown_s
    row = detail(ctx, task_id)
    assert row["status"] == "deferred"
    assert "ollama" in row["reason"] and "open" in row["reason"]
    assert row["attempts"] == []  # nothing was called, nothing held
    ctx.breakers().reset("ollama")
    assert runner(ctx).run(task_id) == "succeeded"  # the redelivery after the countdown runs it


def test_past_its_deadline_the_task_ends_no_provider_with_the_reason(ctx: Context) -> None:
    trip(ctx, "ollama")
    task_id = integ(ctx, deadline_s=0)
    assert runner(ctx).run(task_id) == "no_provider"
    reason = detail(ctx, task_id)["reason"]
    assert "ollama" in reason and "breaker open" in reason


def test_a_budget_too_small_for_claude_sends_a_review_to_the_free_rung(ctx: Context) -> None:
    ctx.ledger().set_budget(scope="all", window="day", cap_usd=0.000001)
    task_id = submit({"kind": "pr_review", "environment": "dev1", "branch": "feature/sample-2"}, context=ctx)
    assert runner(ctx).run(task_id) == "succeeded"
    row = detail(ctx, task_id)
    assert row["provider"] == "ollama"
    (attempt,) = row["attempts"]
    assert "claude" in attempt["route_note"] and "budget" in attempt["route_note"]


def test_a_kind_without_a_free_fallback_ends_budget_exhausted(ctx: Context) -> None:
    ctx.ledger().set_budget(scope="all", window="day", cap_usd=0.000001)
    task_id = submit({"kind": "plan", "environment": "dev1", "goal": "anything", "deadline_s": 0}, context=ctx)
    assert runner(ctx).run(task_id) == "budget_exhausted"
    assert "all/day" in detail(ctx, task_id)["reason"]


def left_open(ctx: Context, task_id: str, *, held: int) -> None:
    """As if a worker died during attempt 1's call, with ``held`` micro-dollars held for it."""
    with session_scope(ctx.database_url) as session:
        repo.claim_task(session, task_id=task_id)
        repo.begin_attempt(session, task_id=task_id, attempt=1, provider="ollama", model="m", transport="api")
    ctx.ledger().hold(
        task_id=task_id, attempt=1, provider="ollama", model="m", group="pr_integ", environment="dev1",
        stage="dev", micros=held,
    )  # fmt: skip


def spend_of(ctx: Context, task_id: str) -> dict[int, tuple[str, int]]:
    with session_scope(ctx.database_url) as session:
        rows = session.query(Spend).filter_by(task_id=task_id)
        return {row.attempt: (row.state, row.charged_micros) for row in rows}


def test_a_call_a_dead_worker_left_open_is_charged_at_its_hold_as_unknown_cost(ctx: Context) -> None:
    task_id = integ(ctx)
    left_open(ctx, task_id, held=5_000)
    assert runner(ctx).run(task_id) == "succeeded"
    first, second = detail(ctx, task_id)["attempts"]
    assert (first["status"], first["error_class"], first["cost_micros"]) == ("failed", "UnknownCost", 5_000)
    assert first["price_version"] == UNKNOWN_COST
    assert second["status"] == "succeeded"
    assert spend_of(ctx, task_id) == {1: ("settled", 5_000), 2: ("settled", 0)}


def test_an_open_call_whose_hold_was_released_is_closed_as_lost(ctx: Context) -> None:
    task_id = integ(ctx)
    left_open(ctx, task_id, held=5_000)
    ctx.ledger().release(task_id=task_id, attempt=1, reason="the call failed; then the worker died")
    assert runner(ctx).run(task_id) == "succeeded"
    first, _ = detail(ctx, task_id)["attempts"]
    assert (first["status"], first["error_class"], first["cost_micros"]) == ("failed", "WorkerLost", 0)
    assert spend_of(ctx, task_id) == {1: ("released", 0), 2: ("settled", 0)}


def test_a_run_that_lost_its_lease_stores_the_answer_and_stops(ctx: Context) -> None:
    """Its renewals came too late and another worker took the task over: the paid answer is stored (the new
    owner acts on it, without a second call), and this run neither acts on it nor finishes the task."""
    owned = iter([False])  # the lease is found lost once the answer is in
    task_id = submit({"kind": "pr_review", "environment": "dev1", "branch": "feature/sample-2"}, context=ctx)
    lost = Runner(ctx, make_provider=factory(), sleep=lambda _: None, owns=lambda: next(owned, False))
    assert lost.run(task_id) == "taken over"
    row = detail(ctx, task_id)
    assert row["status"] == "running" and [a["status"] for a in row["attempts"]] == ["answered"]
    assert runner(ctx).run(task_id) == "succeeded"  # the new owner: the stored answer, no new attempt
    assert [a["status"] for a in detail(ctx, task_id)["attempts"]] == ["succeeded"]
