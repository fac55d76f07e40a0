"""Exactly one charge per answered call: an answer is stored before anything else can fail, a redelivery goes
on from what is stored, and a call nobody can account for is charged at its hold, flagged ``unknown cost``.

The outages are real: a private PostgreSQL cluster (tests/private_postgres.py) is stopped between the provider's
answer and its store, the provider is the simulator over HTTP, the breakers and parked answers live in Redis.
A worker that dies is played by the Runner's side effects raising out of the run (nothing after it runs), and
the redelivery by a fresh Runner on the same task.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
import redis
from conftest import free_port, private_postgres
from pipeline_kit import detail, factory, make_context
from sqlalchemy.exc import OperationalError
from test_pipeline import _conflicting_impl, by_kind

from cli.detail import show_detail
from ops.pgcluster import PrivatePostgres
from providers.base import ProviderResponse
from routing.breaker import PermitRequest
from routing.keys import answer_key
from routing.ledger import closing
from routing.parked import ParkedAnswer, ParkedAnswers, until_stored
from simulator.server import BackgroundSimulator
from store.budgets import SpendRow
from store.costs import UNKNOWN_COST, costs
from store.db import dispose_all, session_scope
from store.models import Attempt, Spend
from switchyard.pricing import cost_micros
from switchyard.usage import Usage
from tasks.attempt import Runner
from tasks.claim import resume_from
from tasks.context import Context
from tasks.kinds.base import Answer, Outcome, Prompt
from tasks.submit import submit

OUTAGE_S = 15.0  # how long PostgreSQL stays away in the outage test (the 16 s outage, give or take)
Guard = Callable[[str, Callable[[], ProviderResponse], PermitRequest | None], ProviderResponse]


class WorkerDied(BaseException):
    """Raised by a side effect to end a run where a kill -9 would: nothing after it runs."""


# --- pure parts ------------------------------------------------------------------------------------------


def spend_row(state: str, held: int, charged: int = 0, version: str | None = None) -> SpendRow:
    return SpendRow(1, state, held, "claude", "m", "g", "dev1", "dev", [], charged, version)


def test_closing_an_open_call_charges_a_hold_still_held_in_full_and_flags_it() -> None:
    closed = closing(spend_row("held", 20_000))
    assert (closed.charged_micros, closed.price_version, closed.unknown, closed.held) == (
        20_000,
        UNKNOWN_COST,
        True,
        True,
    )


def test_closing_finds_no_hold_or_one_released_and_charges_nothing() -> None:
    for row in (None, spend_row("released", 20_000)):
        closed = closing(row)
        assert (closed.charged_micros, closed.unknown, closed.held) == (0, False, False)


def test_closing_again_says_what_the_first_close_charged() -> None:
    again = closing(spend_row("settled", 20_000, 20_000, UNKNOWN_COST))
    assert (again.charged_micros, again.unknown, again.held) == (20_000, True, False)
    settled = closing(spend_row("settled", 20_000, 300, "v1"))  # settled at its real cost by the dead worker
    assert (settled.charged_micros, settled.price_version, settled.unknown) == (300, "v1", False)


def attempt(
    number: int, status: str, *, answer: str | None = "a", error_class: str | None = None, at: int = 0
) -> Attempt:
    finished = None if status in ("running", "answered") else datetime_at(at)
    return Attempt(
        attempt=number, provider="claude", model="m", transport="api", status=status, answer=answer,
        error_class=error_class, finished_at=finished,
    )  # fmt: skip


def datetime_at(second: int) -> datetime:
    return datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC)


def test_a_stored_outcome_resumes_from_the_attempt_judged_last() -> None:
    outcome = Outcome("approved", {}, "succeeded")
    attempts = [
        attempt(1, "failed", error_class="BadAnswer", at=1),
        attempt(2, "succeeded", at=9),  # the main answer: its verdict came after the assist's
        attempt(3, "succeeded", at=5),  # an assist call made while acting on 2
    ]
    resumed = resume_from(attempts, outcome)
    assert resumed is not None and (resumed.number, resumed.outcome) == (2, outcome)


def test_without_an_outcome_the_latest_answered_attempt_is_acted_on_again() -> None:
    resumed = resume_from([attempt(1, "failed", error_class="BadAnswer", at=1), attempt(2, "answered")], None)
    assert resumed is not None and (resumed.number, resumed.outcome) == (2, None)
    assert resume_from([attempt(1, "succeeded", at=1)], None) is None  # an assist's verdict is no outcome
    assert resume_from([attempt(1, "failed", error_class="UnknownCost", answer=None, at=1)], None) is None


def test_the_questions_asked_while_acting_are_answered_again_from_their_stored_answers() -> None:
    attempts = [
        attempt(1, "answered"),  # the worker died while acting on it
        attempt(2, "succeeded", at=3),  # a question its handler asked (a conflict to resolve)
        attempt(3, "answered"),  # another, answered, then the worker died
    ]
    resumed = resume_from(attempts, None)
    assert resumed is not None and resumed.number == 1
    assert [number for number, _ in resumed.assists] == [2, 3]


def test_a_parked_answer_survives_its_trip_through_json() -> None:
    usage = Usage(input_tokens=10, cached_input_tokens=2, output_tokens=7, compute_seconds=0.5)
    parked = ParkedAnswer("claude", "m", "api", "hello ✓", usage, 1234, "v1", 12.5)
    assert ParkedAnswer.from_json(parked.to_json()) == parked


def test_until_stored_waits_out_an_outage_and_gives_up_at_its_limit() -> None:
    slept: list[float] = []
    outages: list[str] = []
    failures = iter([OperationalError("s", {}, Exception("away"))] * 3)

    def store() -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return "stored"

    found = until_stored(
        store,
        initial_s=0.5,
        max_s=1.0,
        within_s=60,
        sleep=slept.append,
        on_outage=lambda e: outages.append(type(e).__name__),
    )
    assert found == "stored" and slept == [0.5, 1.0, 1.0] and len(outages) == 3

    def away() -> None:
        raise OperationalError("s", {}, Exception("away"))

    with pytest.raises(OperationalError):
        until_stored(away, initial_s=0.01, max_s=0.01, within_s=0, sleep=slept.append)


def test_until_stored_does_not_retry_what_waiting_cannot_cure() -> None:
    def broken() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        until_stored(broken, initial_s=0.01, max_s=0.01, within_s=60, sleep=lambda _: None)


# --- with a real PostgreSQL that goes away ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[PrivatePostgres]:
    with private_postgres() as cluster:
        yield cluster


@pytest.fixture
def ctx(tmp_path: Path, pg: PrivatePostgres, server: BackgroundSimulator, redis_url: str) -> Iterator[Context]:
    if not pg.started:  # a test that failed mid-outage left it stopped
        pg.start()
    url = pg.database(f"charge_{uuid.uuid4().hex[:10]}")
    try:
        yield make_context(tmp_path, server.url, redis_url, url)
    finally:
        dispose_all()


class Outage:
    """PostgreSQL stopped now, started again ``seconds`` later on a thread of its own."""

    def __init__(self, pg: PrivatePostgres, seconds: float) -> None:
        self.pg, self.seconds = pg, seconds
        self.thread: threading.Thread | None = None
        self.lasted = 0.0

    def begin(self) -> None:
        self.pg.stop()
        began = time.monotonic()

        def end() -> None:
            time.sleep(self.seconds)  # the outage's length is the scenario, not a wait for something
            self.pg.start()
            self.lasted = time.monotonic() - began

        self.thread = threading.Thread(target=end, daemon=True)
        self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join(timeout=600)


def after_answer(ctx: Context, then: Callable[[], None]) -> Guard:
    """The real guarded call; ``then`` runs once its answer is in hand, before the Runner stores it."""
    real = ctx.guard(sleep=time.sleep)

    def guard(provider: str, fn: Callable[[], ProviderResponse], permit: PermitRequest | None) -> ProviderResponse:
        response = real(provider, fn, permit)
        then()
        return response

    return guard


def review(ctx: Context) -> str:
    return submit({"kind": "pr_review", "environment": "dev1", "branch": "feature/sample-1"}, context=ctx)


def calls(sim: httpx.Client, provider: str) -> int:
    count: int = sim.get("/_sim/state").json()["providers"][provider]["calls"]
    return count


def spend_of(ctx: Context, task_id: str) -> dict[int, tuple[str, int, int, str | None]]:
    with session_scope(ctx.database_url) as session:
        rows = session.query(Spend).filter_by(task_id=task_id)
        return {r.attempt: (r.state, r.held_micros, r.charged_micros, r.price_version) for r in rows}


def real_cost(ctx: Context, row: dict[str, object]) -> int:
    fields = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens", "output_tokens")
    usage = Usage(**{name: int(row[name]) for name in fields}, reasoning_tokens=int(row["reasoning_tokens"]))  # type: ignore[call-overload]
    _, price = ctx.fleet.price(str(row["provider"]), str(row["model"]), date.today())
    return cost_micros(usage, price)


def parked_keys(ctx: Context, task_id: str) -> int:
    client = redis.Redis.from_url(ctx.settings.effective_state_url)
    try:
        return sum(client.exists(answer_key(task_id, n)) for n in (1, 2, 3))
    finally:
        client.close()


def test_an_answer_waits_while_postgresql_is_away_and_is_charged_once(
    ctx: Context, pg: PrivatePostgres, sim: httpx.Client
) -> None:
    task_id = review(ctx)
    before = calls(sim, "claude")
    outage = Outage(pg, OUTAGE_S)
    try:
        status = Runner(ctx, make_provider=factory(), guard=after_answer(ctx, outage.begin)).run(task_id)
    finally:
        outage.join()
    assert status == "succeeded"
    assert outage.lasted >= OUTAGE_S
    assert calls(sim, "claude") == before + 1  # no second call
    row = detail(ctx, task_id)
    (only,) = row["attempts"]
    assert (only["provider"], only["status"], only["error_class"]) == ("claude", "succeeded", None)
    assert only["cost_micros"] == real_cost(ctx, only) > 0 and only["price_version"] != UNKNOWN_COST
    assert spend_of(ctx, task_id) == {
        1: ("settled", spend_of(ctx, task_id)[1][1], only["cost_micros"], only["price_version"])
    }
    assert row["cost_micros"] == only["cost_micros"]  # charged exactly once, at its real cost
    assert parked_keys(ctx, task_id) == 0  # the copy parked in Redis while it waited is gone


class DiesBeforeTheTerminalStatus(Runner):
    def _succeed(self, task: object, route: object, outcome: object) -> str:  # type: ignore[override]
        raise WorkerDied


def test_a_redelivery_after_a_worker_died_before_the_end_acts_again_without_calling(
    ctx: Context, sim: httpx.Client
) -> None:
    """The verdict, the result row and the terminal status are one transaction: a worker that dies before it
    leaves the attempt answered (paid, settled) and no result; the redelivery acts on the stored answer."""
    task_id = review(ctx)
    before = calls(sim, "claude")
    with pytest.raises(WorkerDied):
        DiesBeforeTheTerminalStatus(ctx, make_provider=factory(), sleep=lambda _: None).run(task_id)
    died = detail(ctx, task_id)
    assert died["status"] == "running" and [a["status"] for a in died["attempts"]] == ["answered"]
    assert died["result"] is None
    assert calls(sim, "claude") == before + 1

    assert Runner(ctx, make_provider=factory(), sleep=lambda _: None).run(task_id) == "succeeded"
    assert calls(sim, "claude") == before + 1  # the redelivery made no call
    row = detail(ctx, task_id)
    (only,) = row["attempts"]
    assert only["status"] == "succeeded" and row["provider"] == "claude"
    assert row["result"]["summary"].startswith(("approve", "request_changes", "comment"))
    assert row["cost_micros"] == only["cost_micros"] > 0
    assert [state for state, *_ in spend_of(ctx, task_id).values()] == ["settled"]


def test_a_parked_answer_is_charged_at_its_real_cost_when_the_waiting_worker_dies(
    ctx: Context, pg: PrivatePostgres, sim: httpx.Client
) -> None:
    task_id = review(ctx)
    before = calls(sim, "claude")

    def die(_: float) -> None:  # the first wait for the database: the worker is killed there
        raise WorkerDied

    waiting = Runner(ctx, make_provider=factory(), sleep=die, guard=after_answer(ctx, pg.stop))
    with pytest.raises(WorkerDied):
        waiting.run(task_id)
    assert parked_keys(ctx, task_id) == 1
    pg.start()

    assert Runner(ctx, make_provider=factory(), sleep=lambda _: None).run(task_id) == "succeeded"
    assert calls(sim, "claude") == before + 1  # acted on the parked answer: no second call
    (only,) = detail(ctx, task_id)["attempts"]
    assert only["status"] == "succeeded" and only["cost_micros"] == real_cost(ctx, only) > 0
    ((state, _, charged, version),) = spend_of(ctx, task_id).values()
    assert (state, charged, version) == ("settled", only["cost_micros"], only["price_version"])
    assert version != UNKNOWN_COST and parked_keys(ctx, task_id) == 0


def test_when_the_answer_waited_in_memory_only_a_dead_worker_leaves_an_unknown_cost(
    ctx: Context, pg: PrivatePostgres, sim: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = review(ctx)
    before = calls(sim, "claude")

    def die(_: float) -> None:
        raise WorkerDied

    nowhere = ParkedAnswers(redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1))  # away too
    waiting = Runner(ctx, make_provider=factory(), sleep=die, guard=after_answer(ctx, pg.stop), parked=nowhere)
    with pytest.raises(WorkerDied):
        waiting.run(task_id)
    pg.start()

    assert Runner(ctx, make_provider=factory(), sleep=lambda _: None).run(task_id) == "succeeded"
    row = detail(ctx, task_id)
    lost, again = row["attempts"]
    held = spend_of(ctx, task_id)[1][1]
    assert (lost["status"], lost["error_class"], lost["price_version"]) == ("failed", "UnknownCost", UNKNOWN_COST)
    assert lost["cost_micros"] == held > 0  # charged at the hold, never $0
    assert again["status"] == "succeeded" and calls(sim, "claude") == before + 2
    assert spend_of(ctx, task_id)[1] == ("settled", held, held, UNKNOWN_COST)
    assert row["cost_micros"] == held + again["cost_micros"]
    with session_scope(ctx.database_url) as session:
        report = costs(session)
    claude = next(p for p in report["providers"] if p["provider"] == "claude")
    assert (claude["unknown_cost_charges"], claude["unknown_cost_micros"]) == (1, held)
    assert report["total"]["unknown_cost_micros"] == held
    show_detail(row)
    assert "unknown cost" in capsys.readouterr().out


class DiesAfterAsking(Runner):
    """Dies right after the handler's own question (a conflict to resolve) was answered and stored."""

    def ask(self, provider: str, prompt: Prompt) -> Answer:
        super().ask(provider, prompt)
        raise WorkerDied


def test_a_redelivery_answers_the_handlers_question_from_its_stored_answer(
    tmp_path: Path, server: BackgroundSimulator, redis_url: str, sqlite_url: str, sim: httpx.Client
) -> None:
    ctx = make_context(tmp_path, server.url, redis_url, sqlite_url)
    _conflicting_impl(ctx)  # codex implemented a change that conflicts with env/dev1
    (review_id,) = by_kind(ctx)["pr_review"]
    assert Runner(ctx, make_provider=factory(), sleep=lambda _: None).run(review_id) == "succeeded"
    (integ_id,) = by_kind(ctx)["pr_integ"]
    with pytest.raises(WorkerDied):
        DiesAfterAsking(ctx, make_provider=factory(), sleep=lambda _: None).run(integ_id)
    asked = calls(sim, "codex")

    assert Runner(ctx, make_provider=factory(), sleep=lambda _: None).run(integ_id) == "succeeded"
    assert calls(sim, "codex") == asked  # the resolution was not asked for again
    integ = detail(ctx, integ_id)
    assert [(a["provider"], a["status"]) for a in integ["attempts"]] == [
        ("ollama", "succeeded"),
        ("codex", "succeeded"),
    ]
    assert integ["merges"][0]["resolved_by"] == "codex"
