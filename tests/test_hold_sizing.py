"""Holds sized from the output that kind produced on that model lately (routing/sizing.py): the percentile and the
no-history cap, the held output passed as each API's output limit (the simulator over HTTP, the real SDKs), an
answer cut by it asked once more with the whole cap held, and the race: 200 attempts near a budget's cap, on
SQLite and on PostgreSQL, admit at least 95% of the work the cap has room for by real charges, and the spend
never passes the cap nor any charge its hold.

``pytest -s -k race`` prints the race's figures with holds sized and with the whole cap held (as before)."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from conftest import NO_PROVIDER_KEYS, REPO
from pipeline_kit import detail, factory, make_context
from sqlalchemy import func, select

from providers.base import ProviderRequest
from providers.registry import build_provider
from routing.estimate import max_cost_micros
from routing.ledger import Ledger
from routing.route import ProviderState, Refusal, RouteRequest, choose_route
from routing.router import Place, Routed, Router
from routing.sizing import HoldSizes, held_output, percentile
from simulator.server import BackgroundSimulator
from store import alerts as alert_rows
from store import repo
from store.db import dispose_all, session_scope
from store.migrate import ensure_schema
from store.models import AlertRow, Spend
from switchyard.fleet import BudgetConfig, Fleet, load_fleet
from switchyard.pricing import cost_micros
from switchyard.settings import Settings
from switchyard.usage import Usage
from tasks.attempt import Deferred, Runner
from tasks.context import Context
from tasks.submit import submit

FLEET = load_fleet(REPO / "switchyard.toml")
KIND, GROUP, PAID, FREE = "pr_review", "pr_review", "claude", "ollama"
MODEL = FLEET.model_for(FLEET.group(GROUP), PAID)
CAP = FLEET.kind(KIND).max_output_tokens
TODAY = date(2026, 6, 1)


# --- sizing from history ------------------------------------------------------------------------------------


def test_the_percentile_is_the_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert [percentile(values, p) for p in (1, 50, 95, 99, 100)] == [1, 50, 95, 99, 100]
    assert percentile([7], 99) == 7
    assert percentile([5, 1, 3], 50) == 3  # unordered input
    with pytest.raises(ValueError, match="no values"):
        percentile([], 95)
    with pytest.raises(ValueError, match="above 0"):
        percentile([1], 0)


def test_the_held_output_is_the_cap_without_history_and_a_percentile_with_it() -> None:
    history = [100] * 90 + [400] * 9 + [1500]
    assert held_output(history[:19], CAP, pct=99, min_history=20) == CAP  # fewer than min_history: the cap
    assert held_output(history, CAP, pct=99, min_history=20) == 400
    assert held_output(history, CAP, pct=95, min_history=20) == 400
    assert held_output(history, CAP, pct=90, min_history=20) == 100
    assert held_output(history, CAP, pct=100, min_history=20) == 1500
    assert held_output(history, 1000, pct=100, min_history=20) == 1000  # never above the cap
    assert held_output([2] * 50, CAP, pct=99, min_history=20) == 16  # nor below the smallest limit a kind may set


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    database: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    ensure_schema(database)
    yield database
    dispose_all()


def seed_history(url: str, outputs: Sequence[int], *, kind: str = KIND, provider: str = PAID, model: str = MODEL,
                 transport: str = "api", prefix: str = "h") -> None:  # fmt: skip
    """Answered attempts of ``kind`` on ``provider``/``model`` with these output tokens, oldest first."""
    with session_scope(url) as session:
        for i, tokens in enumerate(outputs):
            task_id = f"{prefix}{i}"
            repo.create_task(
                session, task_id=task_id, kind=kind, group=GROUP, environment="dev1", stage="dev", title="",
                payload={},
            )  # fmt: skip
            repo.begin_attempt(session, task_id=task_id, attempt=1, provider=provider, model=model, transport=transport)
            repo.finish_attempt(
                session, task_id=task_id, attempt=1, status="answered", usage=Usage(input_tokens=500,
                output_tokens=tokens), cost_micros=1, price_version="v", answer="{}",
            )  # fmt: skip


class Ticks:
    def __init__(self) -> None:
        self.at = 0.0

    def __call__(self) -> float:
        return self.at


def test_sizes_come_from_that_kind_on_that_model_and_are_read_once_per_ttl(url: str) -> None:
    seed_history(url, [100] * 15 + [300] * 10)
    seed_history(url, [1000] * 30, kind="pr_impl", prefix="k")  # another kind
    seed_history(url, [1200] * 30, model="claude-opus-4-5", prefix="m")  # another model
    seed_history(url, [1500] * 30, transport="cli", prefix="c")  # an agent CLI's many turns
    ticks = Ticks()
    sizes = HoldSizes(url, history=20, min_history=20, pct=95, ttl_s=30, clock=ticks)
    assert sizes.output_tokens(KIND, PAID, MODEL, CAP) == 300  # the last 20: 10 of 100, 10 of 300
    assert sizes.output_tokens(KIND, PAID, "claude-opus-4-5", CAP) == 1200
    assert sizes.output_tokens(KIND, "codex", "gpt-5.3-codex", CAP) == CAP  # no history: the cap
    seed_history(url, [50] * 20, prefix="n")
    assert sizes.output_tokens(KIND, PAID, MODEL, CAP) == 300  # this process's copy, no query
    ticks.at = 31.0
    assert sizes.output_tokens(KIND, PAID, MODEL, CAP) == 50  # read again after the ttl


def test_an_unreadable_history_holds_the_whole_cap(sqlite_url: str) -> None:
    sizes = HoldSizes(sqlite_url)  # no schema: the query fails
    assert sizes.output_tokens(KIND, PAID, MODEL, CAP) == CAP


def states(*names: str) -> dict[str, ProviderState]:
    return {name: ProviderState(name=name, max_in_flight=1000, cli_available=True) for name in names}


def route_request(**extra: object) -> RouteRequest:
    fields: dict[str, object] = {"kind": KIND, "group": GROUP, "environment": "dev1", "stage": "dev"}
    return RouteRequest(**{**fields, "prompt_chars": 3000, **extra})  # type: ignore[arg-type]


def test_a_route_holds_the_sized_output_over_the_api_and_the_cap_otherwise() -> None:
    price = FLEET.price(PAID, MODEL, TODAY)[1]
    outputs = {(PAID, MODEL): 300}
    sized = choose_route(route_request(), FLEET, states(PAID, FREE), [], TODAY, outputs=outputs)
    assert not isinstance(sized, Refusal)
    assert (sized.provider, sized.transport, sized.max_output_tokens) == (PAID, "api", 300)
    assert sized.max_cost_micros == max_cost_micros(3000, 300, price)
    full = choose_route(route_request(full_output=True), FLEET, states(PAID, FREE), [], TODAY, outputs=outputs)
    assert not isinstance(full, Refusal)
    assert (full.max_output_tokens, full.max_cost_micros) == (CAP, max_cost_micros(3000, CAP, price))
    cli_fleet = FLEET.model_copy(
        update={"groups": [g.model_copy(update={"transports": {PAID: "cli"}}) for g in FLEET.groups]}
    )
    cli = choose_route(route_request(), cli_fleet, states(PAID, FREE), [], TODAY, outputs=outputs)
    assert not isinstance(cli, Refusal)
    assert (cli.transport, cli.max_output_tokens) == ("cli", CAP)  # an agent CLI cannot limit its output


# --- the limit on each API transport (the simulator over HTTP, the real SDKs) -------------------------------


@pytest.mark.parametrize(
    ("provider", "model"), [("claude", "claude-sonnet-5"), ("codex", "gpt-5.3-codex"), ("ollama", "qwen2.5-coder:7b")]
)
def test_the_held_output_is_each_apis_output_limit(provider: str, model: str, server: BackgroundSimulator,
                                                  tmp_path: Path) -> None:  # fmt: skip
    settings = Settings(**NO_PROVIDER_KEYS, home=tmp_path, simulate=True, simulator_url=server.url)
    client = build_provider(provider, settings, FLEET, transport="api")
    try:
        ask = {"model": model, "system": "Task kind: plan", "prompt": "Goal: a goal long enough to plan"}
        cut = client.call(ProviderRequest(**ask, max_output_tokens=24))
        whole = client.call(ProviderRequest(**ask, max_output_tokens=CAP))
    finally:
        client.close()
    assert cut.cut_short and cut.usage.output_tokens <= 24  # reasoning included (OpenAI counts it in the limit)
    assert cut.stop_reason == {"claude": "max_tokens", "codex": "max_output_tokens", "ollama": "length"}[provider]
    assert not whole.cut_short and whole.usage.output_tokens > 24


# --- an answer cut short: asked once more with the whole cap held ---------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path, server: BackgroundSimulator, redis_url: str, sqlite_url: str) -> Context:
    return make_context(tmp_path, server.url, redis_url, sqlite_url)


def test_an_answer_cut_by_its_held_limit_is_asked_again_once_with_the_whole_cap(ctx: Context) -> None:
    seed_history(ctx.database_url, [16] * 20)  # reviews of 16 tokens: the next one holds (and may produce) 16
    task_id = submit({"kind": KIND, "environment": "dev1", "branch": "feature/sample-2"}, context=ctx)
    assert Runner(ctx, make_provider=factory(), sleep=lambda _: None).run(task_id) == "succeeded"
    first, second = detail(ctx, task_id)["attempts"]
    assert (first["provider"], first["status"], first["error_class"]) == (PAID, "failed", "Truncated")
    assert first["output_tokens"] == 16 and first["cost_micros"] > 0  # the cut answer is paid for
    assert (second["provider"], second["status"]) == (PAID, "succeeded")
    assert second["output_tokens"] > 16
    with session_scope(ctx.database_url) as session:
        spent = {r.attempt: (r.held_micros, r.charged_micros) for r in session.query(Spend).filter_by(task_id=task_id)}
        over = session.scalar(select(func.count()).where(AlertRow.cause == alert_rows.CHARGE_OVER_HOLD))
    price = ctx.fleet.price(PAID, MODEL, datetime.now(UTC).date())[1]
    assert spent[1][1] <= spent[1][0] and spent[2][1] <= spent[2][0]  # each charged within its hold
    assert spent[2][0] - spent[1][0] == round((CAP - 16) * price.output)  # the same prompt, the whole cap held
    assert over == 0


def test_a_retry_the_budget_cannot_hold_yet_waits_and_then_holds_the_whole_cap(ctx: Context) -> None:
    seed_history(ctx.database_url, [16] * 20, kind="plan")  # plans of 16 tokens: the next one is cut at 16
    ctx.ledger().set_budget(scope="all", window="hour", cap_usd=0.01)  # room for a small hold, not the whole cap
    request = {"kind": "plan", "environment": "dev1", "goal": "a goal to plan", "deadline_s": 7200}
    task_id = submit(request, context=ctx)  # a deadline past the hour: the task waits for the next window
    runner = Runner(ctx, make_provider=factory(), sleep=lambda _: None)
    with pytest.raises(Deferred, match="budget"):  # plans have no free fallback: the retry waits for room
        runner.run(task_id)
    ctx.ledger().set_budget(scope="all", window="hour", cap_usd=10)
    runner.run(task_id)  # the redelivery asks with the whole cap at once: no second cut answer
    first, second = detail(ctx, task_id)["attempts"]
    assert (first["error_class"], first["output_tokens"]) == ("Truncated", 16)
    assert second["error_class"] is None and second["output_tokens"] > 16
    with session_scope(ctx.database_url) as session:
        held = {r.attempt: r.held_micros for r in session.query(Spend).filter_by(task_id=task_id)}
    price = ctx.fleet.price(PAID, MODEL, datetime.now(UTC).date())[1]
    assert held[2] - held[1] == round((ctx.fleet.kind("plan").max_output_tokens - 16) * price.output)


def test_a_charge_above_its_hold_is_logged_and_recorded(sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    ensure_schema(sqlite_url)
    with session_scope(sqlite_url) as session:
        repo.create_task(session, task_id="t1", kind=KIND, group=GROUP, environment="dev1", stage="dev", title="",
                         payload={})  # fmt: skip
    ledger = Ledger(sqlite_url, FLEET)
    ledger.hold(task_id="t1", attempt=1, provider=PAID, model=MODEL, group=GROUP, environment="dev1", stage="dev",
                micros=1_000)  # fmt: skip
    ledger.settle(task_id="t1", attempt=1, charged_micros=1_500, price_version="v")
    assert "above its hold" in caplog.text
    with session_scope(sqlite_url) as session:
        (row,) = session.scalars(select(AlertRow).where(AlertRow.cause == alert_rows.CHARGE_OVER_HOLD)).all()
    assert row.payload["held_micros"] == 1_000 and row.payload["charged_micros"] == 1_500
    dispose_all()


# --- the race near a cap ----------------------------------------------------------------------------------------

WORK = 200  # attempts
IN_FLIGHT = 8  # calls at once: claude's max_in_flight in the default fleet
SPARE = 0.0  # the cap has room for all the work by real charges, and no more
MEDIAN_OUTPUT, SPREAD = 300, 0.35  # a review's output tokens: log-normal around 300 (p95 ~530, p99 ~680)


def natural_output(rng: random.Random) -> int:
    return min(CAP, max(16, round(rng.lognormvariate(math.log(MEDIAN_OUTPUT), SPREAD))))


@dataclass(frozen=True)
class Work:
    task_id: str
    prompt_chars: int
    output_tokens: int  # what the model would write given room

    def charge(self, output: int, fleet: Fleet) -> int:
        """The real charge of a call that wrote ``output`` tokens (four characters a token, as the simulator)."""
        price = fleet.price(PAID, MODEL, TODAY)[1]
        return cost_micros(Usage(input_tokens=self.prompt_chars // 4, output_tokens=output), price)


class NoLimits:
    """Shared state with every breaker closed and no limits: only the budget decides."""

    def snapshot(self, providers: Sequence[str]) -> Mapping[str, ProviderState]:
        return states(*providers)

    def request(self, provider: str) -> NoPermit:
        return NoPermit()

    def mark_model(self, provider: str, mark: object) -> None:
        raise AssertionError("no model is marked in the race")


class NoPermit:
    def cancel(self) -> None:
        pass


@dataclass
class Tally:
    paid: int = 0
    free: int = 0
    cut: int = 0
    held: int = 0  # on the paid provider
    charged: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


def race(url: str, *, sized: bool, day: date) -> dict[str, float]:
    """``WORK`` reviews, ``IN_FLIGHT`` at a time, through the real router and ledger against a budget with room
    for all of them by real charges and no more. A call writes what its work would, up to the limit held for it, and
    is settled to its real charge; a cut one is asked again with the whole cap held (as the attempt loop does)."""
    prefix, rng = f"w{day.isoformat()}-", random.Random(11)  # the same work in every race
    work = [Work(f"{prefix}{i}", rng.randint(1500, 4500), natural_output(rng)) for i in range(WORK)]
    with session_scope(url) as session:
        for item in work:
            repo.create_task(session, task_id=item.task_id, kind=KIND, group=GROUP, environment="dev1", stage="dev",
                             title="", payload={})  # fmt: skip
    fits = sum(item.charge(item.output_tokens, FLEET) for item in work)
    cap = math.ceil(fits * (1 + SPARE))
    fleet = FLEET.model_copy(update={"budgets": [BudgetConfig(scope="all", window="day", cap_usd=cap / 1e6)]})
    settings = Settings(**NO_PROVIDER_KEYS, simulate=True, simulator_url="http://127.0.0.1:9")
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    ledger = Ledger(url, fleet, now=lambda: noon)
    sizes = HoldSizes(url) if sized else None
    router = Router(settings, fleet, ledger, NoLimits(), today=lambda: TODAY, sizes=sizes)  # type: ignore[arg-type]
    tally, todo, calls = Tally(), iter(work), random.Random(rng.random())
    take = threading.Lock()

    def one(item: Work) -> None:
        for number, full in ((1, False), (2, True)):
            request = route_request(prompt_chars=item.prompt_chars, full_output=full)
            routed = router.route(request, Place(item.task_id, number, GROUP, "dev1", "dev"))
            assert isinstance(routed, Routed), routed  # the free provider always takes it
            if routed.provider != PAID:
                ledger.settle(task_id=item.task_id, attempt=number, charged_micros=0, price_version="free")
                tally.add(free=1)
                return
            limit = routed.max_output_tokens or CAP
            written = min(item.output_tokens, limit)
            time.sleep(calls.uniform(0.002, 0.01))  # the call: holds stay in flight meanwhile
            charge = item.charge(written, fleet)
            ledger.settle(task_id=item.task_id, attempt=number, charged_micros=charge, price_version="v")
            tally.add(held=routed.max_cost_micros, charged=charge)
            if written == item.output_tokens:
                tally.add(paid=1)
                return
            tally.add(cut=1)
        raise AssertionError("a route holding the whole cap cut an answer short")

    def worker() -> None:
        while True:
            with take:
                item = next(todo, None)
            if item is None:
                return
            one(item)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(IN_FLIGHT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with session_scope(url) as session:
        rows = session.query(Spend).filter(Spend.task_id.like(f"{prefix}%")).all()
        spent = sum(row.charged_micros for row in rows)
        over = [row for row in rows if row.charged_micros > row.held_micros or row.state != "settled"]
    assert over == []  # every hold settled, no charge above its hold
    assert spent == tally.charged <= cap
    return {
        "admitted": tally.paid / WORK,  # all of the work fits by real charges
        "hold_per_charge": tally.held / tally.charged,
        "cut": tally.cut,
        "spent_of_cap": spent / cap,
        "seconds": time.monotonic() - started,
    }


def test_race_near_a_cap_admits_the_work_that_fits(url: str) -> None:
    rng = random.Random(7)
    seed_history(url, [natural_output(rng) for _ in range(200)])  # the reviews before: what the holds are sized from
    before = race(url, sized=False, day=TODAY)  # as it was: every hold the whole cap
    after = race(url, sized=True, day=TODAY + timedelta(days=1))  # a fresh day: empty budget windows
    database = url.split(":", maxsplit=1)[0]
    print(f"\nrace on {database}: whole cap held {fmt(before)}; sized {fmt(after)}")
    assert after["admitted"] >= 0.95
    assert after["spent_of_cap"] <= 1.0
    assert after["hold_per_charge"] < before["hold_per_charge"] / 2


def fmt(figures: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.3f}" if isinstance(value, float) else f"{name} {value}"
                     for name, value in figures.items())  # fmt: skip
