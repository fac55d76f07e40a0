"""The router: which provider runs an attempt, from snapshots only; every rule by hand, then as properties."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.estimate import REQUEST_OVERHEAD_TOKENS, estimate_tokens, max_cost_micros
from routing.route import ProviderState, Refusal, Route, RouteRequest, applies, candidates, choose_route
from switchyard.budgets import BudgetState
from switchyard.errors import ConfigError
from switchyard.fleet import load_fleet
from switchyard.fleet_models import Fleet, Price
from switchyard.pricing import cost_micros
from switchyard.usage import Usage

TODAY = date(2026, 6, 1)
DEFAULT = Path(__file__).resolve().parent.parent / "switchyard.toml"
PROVIDERS = ("paid", "cheap", "local", "spare", "agent")


def _provider(transports: list[str], model: str, prices: list[dict[str, Any]], free: bool = False) -> dict[str, Any]:
    return {
        "transports": transports,
        "default_model": model,
        "free": free,
        "models": [{"name": model, "prices": prices}],
    }


def make_fleet() -> Fleet:
    """paid → cheap ladders, two free providers (local, spare) and a cli-only agent; prices by hand."""
    zero = [{"effective": "2024-01-01", "input": 0.0, "output": 0.0}]
    return Fleet.model_validate(
        {
            "environments": {"names": ["dev1", "dev2"]},
            "groups": [
                {"name": "high", "queue": "high", "sessions": 1, "kinds": ["plan"], "ladder": ["paid"]},
                {"name": "review", "queue": "review", "sessions": 1, "kinds": ["pr_review"], "ladder": ["paid"]},
                {
                    "name": "impl",
                    "queue": "impl",
                    "sessions": 1,
                    "kinds": ["pr_impl"],
                    "ladder": ["cheap", "local", "paid"],
                    "models": {"paid": "paid-big"},
                },
                {
                    "name": "dev",
                    "queue": "dev",
                    "sessions": 1,
                    "kinds": ["dev_task", "pr_integ"],
                    "ladder": ["agent", "paid"],
                    "transports": {"agent": "cli", "paid": "cli"},
                },
            ],
            "kinds": {
                "plan": {"max_output_tokens": 2048, "free_fallback": False},
                "pr_review": {"max_output_tokens": 2048},
                "pr_impl": {"max_output_tokens": 4096},
            },
            "providers": {
                "paid": {
                    **_provider(["api", "cli"], "paid-small", [{"effective": "2026-01-01", "input": 2, "output": 10}]),
                    "models": [
                        {
                            "name": "paid-small",
                            "prices": [
                                {"effective": "2025-01-01", "input": 3.0, "output": 15.0},
                                {"effective": "2026-01-01", "input": 2.0, "output": 10.0},
                            ],
                        },
                        {"name": "paid-big", "prices": [{"effective": "2026-01-01", "input": 5.0, "output": 25.0}]},
                    ],
                },
                "cheap": _provider(["api"], "cheap-1", [{"effective": "2026-01-01", "input": 1.75, "output": 14.0}]),
                "local": _provider(["api"], "local-7b", zero, free=True),
                "spare": _provider(["api"], "spare-3b", zero, free=True),
                "agent": _provider(["cli"], "agent-1", [{"effective": "2026-03-01", "input": 1.0, "output": 5.0}]),
            },
        }
    )


FLEET = make_fleet()
READY = {name: ProviderState(name=name, max_in_flight=4, cli_available=True) for name in PROVIDERS}
# 3000 characters are 1032 tokens; paid-small costs 1032*2 + 2048*10 = 22_544 micro-USD for a pr_review
PAID_REVIEW = 22_544


def request(kind: str = "pr_review", group: str = "review", **fields: Any) -> RouteRequest:
    base: dict[str, Any] = {"environment": "dev1", "stage": "dev", "prompt_chars": 3000}
    return RouteRequest(kind=kind, group=group, **(base | fields))


def states(**changes: dict[str, Any]) -> dict[str, ProviderState]:
    return {name: replace(state, **changes.get(name, {})) for name, state in READY.items()}


def budget(cap: int, used: int, **fields: Any) -> BudgetState:
    base: dict[str, Any] = {"scope": "all", "target": "*", "window": "day", "window_ends_in_s": 500.0}
    return BudgetState(cap_micros=cap, used_micros=used, **(base | fields))


def route(
    req: RouteRequest | None = None, providers: dict[str, ProviderState] | None = None, *budgets: BudgetState
) -> Route | Refusal:
    return choose_route(req or request(), FLEET, READY if providers is None else providers, budgets, TODAY)


def must_route(result: Route | Refusal) -> Route:
    assert isinstance(result, Route), result
    return result


def must_refuse(result: Route | Refusal) -> Refusal:
    assert isinstance(result, Refusal), result
    return result


# --- the estimate ---------------------------------------------------------------------------------------


def test_estimate_rounds_characters_up_to_tokens_and_adds_the_overhead() -> None:
    assert REQUEST_OVERHEAD_TOKENS == 32
    assert [estimate_tokens(n) for n in (0, 1, 3, 4, 3000)] == [32, 33, 33, 34, 1032]
    with pytest.raises(ValueError, match="negative"):
        estimate_tokens(-1)


def test_max_cost_by_hand_and_rounded_up() -> None:
    price = Price(effective=TODAY, input=2.0, output=10.0)
    assert max_cost_micros(3000, 2048, price) == PAID_REVIEW
    fractional = Price(effective=TODAY, input=0.2, output=0.0)
    assert max_cost_micros(0, 16, fractional) == 7  # 32 tokens * 0.2 = 6.4 → 7, never rounded down
    assert max_cost_micros(10_000, 4096, Price(effective=TODAY, input=0.0, output=0.0)) == 0
    with pytest.raises(ValueError, match="max_output_tokens"):
        max_cost_micros(1, -1, price)


@given(chars=st.integers(0, 10**7), extra=st.integers(0, 10**6))
def test_estimate_is_monotone_and_never_below_a_quarter(chars: int, extra: int) -> None:
    assert estimate_tokens(chars + extra) >= estimate_tokens(chars)
    assert estimate_tokens(chars) * 4 >= chars  # above English prose's ~4 characters per token


prices = st.builds(
    Price,
    effective=st.just(TODAY),
    input=st.decimals(0, 100, places=3).map(float),
    output=st.decimals(0, 100, places=3).map(float),
)


@given(price=prices, chars=st.integers(0, 10**6), out=st.integers(0, 10**5), more=st.integers(0, 10**4))
def test_max_cost_is_monotone_and_covers_the_billed_cost(price: Price, chars: int, out: int, more: int) -> None:
    cost = max_cost_micros(chars, out, price)
    assert max_cost_micros(chars + more, out, price) >= cost
    assert max_cost_micros(chars, out + more, price) >= cost
    assert cost >= cost_micros(Usage(input_tokens=estimate_tokens(chars), output_tokens=out), price)


# --- candidates -----------------------------------------------------------------------------------------


def test_candidates_are_the_ladder_then_free_providers_outside_it_in_fleet_order() -> None:
    assert candidates(FLEET, FLEET.group("review"), "pr_review") == [("paid", 1), ("local", 0), ("spare", 0)]
    assert candidates(FLEET, FLEET.group("impl"), "pr_impl") == [("cheap", 1), ("local", 2), ("paid", 3), ("spare", 0)]
    assert candidates(FLEET, FLEET.group("high"), "plan") == [("paid", 1)]  # plan: free_fallback = false


def test_first_rung_wins_with_its_model_transport_and_cost() -> None:
    assert route() == Route("paid", "paid-small", "api", PAID_REVIEW, 1, max_output_tokens=2048)


def test_group_model_and_the_kinds_output_cap_set_the_cost() -> None:
    chosen = must_route(route(request("pr_impl", "impl"), states(cheap={"breaker": "disabled"}), budget(10**9, 0)))
    assert (chosen.provider, chosen.rung, chosen.max_cost_micros) == ("local", 2, 0)
    chosen = must_route(route(request("pr_impl", "impl", excluded=frozenset({"cheap", "local"}))))
    assert (chosen.provider, chosen.model, chosen.rung) == ("paid", "paid-big", 3)
    assert chosen.max_cost_micros == 1032 * 5 + 4096 * 25


def test_the_price_in_force_on_the_day_is_used() -> None:
    old = choose_route(request(), FLEET, READY, [], date(2025, 6, 1))
    assert must_route(old).max_cost_micros == 1032 * 3 + 2048 * 15
    refused = must_refuse(choose_route(request("plan", "high"), FLEET, READY, [], date(2024, 6, 1)))
    assert "paid: no price for paid-small on 2024-06-01" in refused.passed_over


# --- permanent reasons ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("req", "providers", "reason"),
    [
        (request(excluded=frozenset({"paid"})), READY, "already failed this task"),
        (
            request(avoid=frozenset({"paid"})),
            READY,
            "must not be used by this task: the task's avoid_providers (--avoid) name it",
        ),
        (
            request(avoid=frozenset({"paid"}), avoid_why=(("paid", "the implementer of the PR under review"),)),
            READY,
            "must not be used by this task: the implementer of the PR under review",
        ),
        (request(), states(paid={"unusable": "no ANTHROPIC_API_KEY"}), "unusable (no ANTHROPIC_API_KEY)"),
        (request(), {k: v for k, v in READY.items() if k != "paid"}, "unusable (no state reported)"),
        (request(), states(paid={"breaker": "disabled"}), "breaker disabled until an operator enables it"),
    ],
)
def test_permanent_reasons_pass_over_the_provider(
    req: RouteRequest, providers: dict[str, ProviderState], reason: str
) -> None:
    chosen = must_route(route(req, providers))
    assert (chosen.provider, chosen.rung, chosen.passed_over) == ("local", 0, (f"paid: {reason}",))
    refused = must_refuse(route(replace(req, kind="plan", group="high"), providers))
    assert (refused.status, refused.retry_in_s) == ("no_provider", None)
    assert refused.reason == f"no provider for plan: paid: {reason}"


# --- transient reasons ----------------------------------------------------------------------------------


def test_open_breaker_waits_for_its_half_open_time() -> None:
    refused = must_refuse(route(request("plan", "high"), states(paid={"breaker": "open", "retry_in_s": 41.2})))
    assert refused == Refusal(
        "no_provider",
        "no provider for plan: paid: breaker open (retry in 42s)",
        41.2,
        ("paid: breaker open (retry in 42s)",),
    )


def test_half_open_takes_the_free_probe_and_waits_when_it_is_taken() -> None:
    assert must_route(route(request(), states(paid={"breaker": "half_open"}))).provider == "paid"
    refused = must_refuse(route(request("plan", "high"), states(paid={"breaker": "half_open", "probe_free": False})))
    assert refused.retry_in_s == 1.0
    assert refused.passed_over == ("paid: breaker half-open, probe under way (retry in 1s)",)


def test_busy_and_rate_limited_providers_are_retried_soon() -> None:
    plan = request("plan", "high")
    assert must_route(route(plan, states(paid={"in_flight": 3}))).provider == "paid"
    busy = must_refuse(route(plan, states(paid={"in_flight": 4})))
    assert (busy.retry_in_s, busy.passed_over) == (1.0, ("paid: busy (4/4 in flight, retry in 1s)",))
    assert must_route(route(plan, states(paid={"calls_last_minute": 99}))).provider == "paid"  # no limit set
    assert must_route(route(plan, states(paid={"calls_last_minute": 9, "requests_per_minute": 10}))).provider == "paid"
    rate = must_refuse(route(plan, states(paid={"calls_last_minute": 10, "requests_per_minute": 10})))
    assert rate.retry_in_s == 60.0
    assert rate.passed_over == ("paid: rate limit (10/10 calls in the last minute, retry in 60s)",)


def test_a_provider_waits_for_its_longest_reason_and_the_refusal_for_the_shortest() -> None:
    providers = states(
        paid={"breaker": "open", "retry_in_s": 30.0, "in_flight": 9},
        local={"in_flight": 4},
        spare={"unusable": "not running"},
    )
    refused = must_refuse(route(request(), providers))
    assert refused.retry_in_s == 1.0  # local frees a slot soon; paid needs 30 s
    assert refused.passed_over[0] == "paid: breaker open (retry in 30s), busy (9/4 in flight, retry in 1s)"
    alone = must_refuse(route(request(), providers | {"local": replace(READY["local"], breaker="disabled")}))
    assert alone.retry_in_s == 30.0
    never = must_refuse(route(request(), providers | {"paid": replace(providers["paid"], breaker="disabled")}))
    assert never.retry_in_s == 1.0


# --- transports -----------------------------------------------------------------------------------------


def test_cli_transport_when_installed_else_api_with_a_note_else_passed_over() -> None:
    dev = request("dev_task", "dev")
    assert must_route(route(dev)).transport == "cli"
    no_cli = states(agent={"cli_available": False}, paid={"cli_available": False})
    chosen = must_route(route(dev, no_cli))
    assert (chosen.provider, chosen.transport, chosen.rung) == ("paid", "api", 2)
    assert chosen.notes == ("paid: cli not installed, using api",)
    assert chosen.passed_over == ("agent: cli not installed and no api transport",)


# --- budgets --------------------------------------------------------------------------------------------


def test_a_block_budget_allows_exactly_the_cap_and_refuses_a_micro_more() -> None:
    assert must_route(route(request(), None, budget(PAID_REVIEW + 100, 100))).provider == "paid"
    chosen = must_route(route(request(), None, budget(PAID_REVIEW + 99, 100)))
    assert (chosen.provider, chosen.degraded) == ("local", False)
    assert chosen.passed_over == (
        "paid: budget all/day blocks: $0.0001 used of $0.0226, this attempt may cost $0.0225 (window ends in 500s)",
    )


def test_a_full_block_budget_also_stops_free_providers() -> None:
    refused = must_refuse(route(request(), None, budget(1000, 1000, window_ends_in_s=120.5)))
    assert (refused.status, refused.retry_in_s) == ("budget_exhausted", 120.5)
    assert refused.reason.startswith("no provider within budget for pr_review: paid: budget all/day blocks")
    assert len(refused.passed_over) == 3


def test_a_degrade_budget_rules_out_paying_providers_only_and_marks_the_route() -> None:
    chosen = must_route(route(request(), None, budget(1000, 5000, action="degrade")))
    assert (chosen.provider, chosen.rung, chosen.degraded) == ("local", 0, True)
    assert "degrades to free providers" in chosen.passed_over[0]
    impl = request("pr_impl", "impl", excluded=frozenset({"cheap"}))
    first_is_free = must_route(route(impl, None, budget(1, 5, action="degrade")))
    assert (first_is_free.provider, first_is_free.degraded) == ("local", False)
    plan = must_refuse(route(request("plan", "high"), None, budget(1000, 5000, action="degrade")))
    assert (plan.status, plan.retry_in_s) == ("budget_exhausted", 500.0)


def test_a_degrade_budget_before_a_free_rung_in_the_ladder_marks_it_degraded() -> None:
    chosen = must_route(route(request("pr_impl", "impl"), None, budget(1000, 999, action="degrade")))
    assert (chosen.provider, chosen.rung, chosen.degraded) == ("local", 2, True)


@pytest.mark.parametrize(
    ("scope", "target", "counts"),
    [
        ("all", "*", True),
        ("environment", "dev1", True),
        ("environment", "dev2", False),
        ("environment", "*", True),
        ("stage", "dev", True),
        ("stage", "qa", False),
        ("group", "review", True),
        ("group", "impl", False),
        ("provider", "paid", True),
        ("provider", "cheap", False),
    ],
)
def test_a_budget_applies_to_its_scope_and_target(scope: str, target: str, counts: bool) -> None:
    over = budget(100, 0, scope=scope, target=target)
    assert applies(over, request(), "paid") is counts
    assert must_route(route(request(), None, over)).provider == ("local" if counts else "paid")


def test_budget_exhausted_needs_a_provider_that_only_the_budget_stopped() -> None:
    over = budget(100, 0, scope="provider", target="paid")
    both = must_refuse(route(request("plan", "high"), states(paid={"in_flight": 4}), over))
    assert (both.status, both.retry_in_s) == ("no_provider", 500.0)
    gone = states(local={"unusable": "down"}, spare={"breaker": "open", "retry_in_s": 9.0})
    mixed = must_refuse(route(request(), gone, over))
    assert (mixed.status, mixed.retry_in_s) == ("budget_exhausted", 9.0)


# --- the default fleet ----------------------------------------------------------------------------------


def test_default_fleet_falls_back_down_the_ladder_and_plan_has_no_free_fallback() -> None:
    fleet = load_fleet(DEFAULT)
    live = {name: ProviderState(name=name, max_in_flight=4) for name in fleet.providers}
    live["claude"] = replace(live["claude"], breaker="open", retry_in_s=42.0)
    review = RouteRequest("pr_review", "pr_review", "dev1", "dev", 3000)
    chosen = must_route(choose_route(review, fleet, live, [], TODAY))
    assert (chosen.provider, chosen.model, chosen.rung, chosen.max_cost_micros) == ("ollama", "qwen2.5-coder:7b", 2, 0)
    plan = must_refuse(choose_route(replace(review, kind="plan", group="high_level"), fleet, live, [], TODAY))
    assert plan.reason == "no provider for plan: claude: breaker open (retry in 42s)"
    with pytest.raises(ConfigError, match="unknown group 'nope'"):
        choose_route(replace(review, group="nope"), fleet, live, [], TODAY)


# --- properties -----------------------------------------------------------------------------------------

provider_states = st.builds(
    ProviderState,
    name=st.just(""),
    unusable=st.sampled_from([None] * 5 + ["no key"]),
    breaker=st.sampled_from(["closed"] * 4 + ["open", "half_open", "disabled"]),
    probe_free=st.booleans(),
    retry_in_s=st.floats(0, 120),
    in_flight=st.integers(0, 2),
    max_in_flight=st.integers(1, 6),
    calls_last_minute=st.integers(0, 5),
    requests_per_minute=st.sampled_from([None, 3, 10]),
    cli_available=st.booleans(),
)
budget_states = st.builds(
    BudgetState,
    scope=st.sampled_from(["all", "environment", "stage", "group", "provider"]),
    target=st.sampled_from(["*", "dev1", "dev2", "dev", "review", "impl", "paid", "cheap", "local"]),
    window=st.just("day"),
    cap_micros=st.integers(1, 400_000),
    used_micros=st.integers(0, 200_000),
    action=st.sampled_from(["block", "degrade"]),
    window_ends_in_s=st.floats(0, 3600),
)
subsets = st.frozensets(st.sampled_from(PROVIDERS), max_size=2)
requests = st.builds(
    lambda kg, chars, ex, av: request(kg[0], kg[1], prompt_chars=chars, excluded=ex, avoid=av),
    st.sampled_from([("plan", "high"), ("pr_review", "review"), ("pr_impl", "impl"), ("dev_task", "dev")]),
    st.integers(0, 30_000),
    subsets,
    subsets,
)
snapshots = st.dictionaries(st.sampled_from(PROVIDERS), provider_states, min_size=4)  # one may be missing


def _counts(b: BudgetState, req: RouteRequest, name: str) -> bool:
    targets = {"all": "*", "environment": req.environment, "stage": req.stage, "group": req.group, "provider": name}
    return b.scope == "all" or b.target in {"*", targets[b.scope]}


def _oracle(req: RouteRequest, name: str, state: ProviderState | None, bs: list[BudgetState]) -> tuple[str, bool]:
    """('ok' | 'permanent' | 'budget' | 'wait', ruled out by a degrade budget) for one candidate: the rules of
    the brief, written out plainly."""
    config, group = FLEET.providers[name], FLEET.group(req.group)
    wanted = group.transports.get(name, "api")
    no_transport = wanted == "cli" and not (state and state.cli_available) and "api" not in config.transports
    if name in req.excluded | req.avoid or state is None or state.unusable or state.breaker == "disabled":
        return "permanent", False
    if no_transport:
        return "permanent", False
    price = FLEET.price(name, FLEET.model_for(group, name), TODAY)[1]
    cost = max_cost_micros(req.prompt_chars, FLEET.kind(req.kind).max_output_tokens, price)
    waits = (
        state.breaker == "open"
        or (state.breaker == "half_open" and not state.probe_free)
        or state.in_flight >= state.max_in_flight
        or (state.requests_per_minute is not None and state.calls_last_minute >= state.requests_per_minute)
    )
    mine = [b for b in bs if _counts(b, req, name)]
    full = [b for b in mine if b.used_micros >= b.cap_micros or b.used_micros + cost > b.cap_micros]
    blocked = any(b.action == "block" for b in full)
    degraded = any(b.action == "degrade" and not config.free and b.used_micros + cost > b.cap_micros for b in mine)
    return ("wait" if waits else "budget" if blocked or degraded else "ok"), degraded


@settings(max_examples=400, deadline=None)
@given(req=requests, live=snapshots, bs=st.lists(budget_states, max_size=4))
def test_the_route_is_the_first_usable_candidate_and_refusals_say_why(
    req: RouteRequest, live: dict[str, ProviderState], bs: list[BudgetState]
) -> None:
    live = {name: replace(state, name=name) for name, state in live.items()}
    result = choose_route(req, FLEET, live, bs, TODAY)
    assert result == choose_route(req, FLEET, live, bs, TODAY)  # deterministic
    order = candidates(FLEET, FLEET.group(req.group), req.kind)
    oracle = [_oracle(req, name, live.get(name), bs) for name, _ in order]
    verdicts = [verdict for verdict, _ in oracle]
    if isinstance(result, Route):
        index = verdicts.index("ok")
        assert result.degraded == any(degraded for _, degraded in oracle[:index])
        assert (result.provider, result.rung) == order[index]
        assert len(result.passed_over) == index
        assert result.rung > 0 or (FLEET.kind(req.kind).free_fallback and FLEET.providers[result.provider].free)
        assert result.provider not in req.excluded | req.avoid
        assert live[result.provider].breaker not in {"open", "disabled"} and live[result.provider].unusable is None
        for b in bs:
            if _counts(b, req, result.provider) and b.action == "block":
                assert b.used_micros + result.max_cost_micros <= b.cap_micros
        return
    assert "ok" not in verdicts
    assert len(result.passed_over) == len(order)
    assert (result.retry_in_s is None) == all(v == "permanent" for v in verdicts)
    assert (result.status == "budget_exhausted") == ("budget" in verdicts)


def test_a_review_says_why_it_avoids_a_provider() -> None:
    from pathlib import Path

    from tasks.attempt import avoid_reasons
    from tasks.kinds.base import TaskInfo
    from tasks.schemas import parse_request

    def task(kind: str, **fields: object) -> TaskInfo:
        request = parse_request({"kind": kind, "environment": "dev1", **fields})
        return TaskInfo("t" * 36, kind, kind, "dev1", "dev", request, Path("."))

    review = task("pr_review", branch="b", implementer="ollama", avoid_providers=["ollama", "codex"])
    assert avoid_reasons(review) == (
        ("ollama", "the implementer of the PR under review (a review is by another provider)"),
        ("codex", "the task's avoid_providers (--avoid) name it"),
    )
    chosen = must_route(
        route(request(avoid=frozenset({"paid"}), avoid_why=(("paid", avoid_reasons(review)[0][1]),)), READY)
    )
    assert chosen.passed_over == ("paid: must not be used by this task: the implementer of the PR under review "
                                  "(a review is by another provider)",)  # fmt: skip
