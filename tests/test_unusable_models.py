"""Models that answered 404: the pure route rule (a mark holds while the provider's fleet entry is unchanged),
the marks in the state Redis (shared, healed, reset), and where people see them (status --providers, its
--json, /api/breakers, breaker heal)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.breaker import Breakers
from routing.marks import ModelMark, decode, fingerprint, in_force, mark_for, new_mark
from routing.route import ProviderState, Refusal, Route, RouteRequest, choose_route
from routing.state import providers_view
from switchyard.fleet import load_fleet
from switchyard.fleet_models import Fleet
from switchyard.settings import DEFAULT_FLEET_FILE, Settings
from tasks.context import build_context
from web.app import create_app

FLEET = load_fleet(DEFAULT_FLEET_FILE)  # pr_review: claude (claude-sonnet-5) → ollama; plan: claude only
TODAY = date(2026, 12, 1)
AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
REVIEW = RouteRequest("pr_review", "pr_review", "dev1", "dev", 3000)
PLAN = RouteRequest("plan", "high_level", "dev1", "dev", 3000)
READY = {name: ProviderState(name=name, max_in_flight=4) for name in FLEET.providers}


def mark(model: str, provider: str = "claude", fleet: Fleet = FLEET) -> ModelMark:
    return new_mark(fleet, provider, model, f"ModelNotFound: {provider}: HTTP 404: model: {model}", AT)


def with_marks(provider: str, *marks: ModelMark) -> dict[str, ProviderState]:
    return {**READY, provider: replace(READY[provider], unusable_models=marks)}


def repriced(fleet: Fleet, provider: str = "claude") -> Fleet:
    """``fleet`` with one more price for the provider's default model: its entry in the fleet file changed."""
    config = fleet.providers[provider]
    model = config.models[0]
    price = model.prices[-1].model_copy(update={"effective": date(2027, 1, 1)})
    models = [model.model_copy(update={"prices": [*model.prices, price]}), *config.models[1:]]
    return fleet.model_copy(
        update={"providers": {**fleet.providers, provider: config.model_copy(update={"models": models})}}
    )


# --- the pure rule ---------------------------------------------------------------------------------------


def test_a_marked_model_passes_its_provider_over_for_good_and_the_next_rung_serves() -> None:
    model = FLEET.model_for(FLEET.group("pr_review"), "claude")
    chosen = choose_route(REVIEW, FLEET, with_marks("claude", mark(model)), [], TODAY)
    assert isinstance(chosen, Route) and chosen.provider == "ollama"
    (note,) = chosen.passed_over
    assert note.startswith(f"claude: model {model} unusable (ModelNotFound: claude: HTTP 404")
    assert "`switchyard breaker heal claude` once fixed" in note
    refused = choose_route(PLAN, FLEET, with_marks("claude", mark(model)), [], TODAY)
    assert isinstance(refused, Refusal)
    assert (refused.status, refused.retry_in_s) == ("no_provider", None)  # waiting cannot cure it


def test_a_mark_on_another_model_of_the_provider_changes_nothing() -> None:
    chosen = choose_route(REVIEW, FLEET, with_marks("claude", mark("claude-opus-4-5")), [], TODAY)
    assert isinstance(chosen, Route) and (chosen.provider, chosen.passed_over) == ("claude", ())


def test_a_mark_from_before_the_providers_fleet_entry_changed_is_ignored() -> None:
    model = FLEET.model_for(FLEET.group("pr_review"), "claude")
    changed = repriced(FLEET)
    assert fingerprint(changed, "claude") != fingerprint(FLEET, "claude")
    assert fingerprint(changed, "ollama") == fingerprint(FLEET, "ollama")  # another provider's marks stay
    chosen = choose_route(REVIEW, changed, with_marks("claude", mark(model)), [], TODAY)
    assert isinstance(chosen, Route) and chosen.provider == "claude"
    assert not in_force(mark(model), changed, "claude")
    assert in_force(mark(model, fleet=changed), changed, "claude")  # a 404 under the new entry marks it again


def test_the_fingerprint_is_stable_and_unknown_providers_have_none() -> None:
    assert fingerprint(FLEET, "claude") == fingerprint(load_fleet(DEFAULT_FLEET_FILE), "claude")
    assert len(fingerprint(FLEET, "claude")) == 16
    assert fingerprint(FLEET, "gemini") == ""
    assert mark_for([mark("a"), mark("b")], "b", FLEET, "claude") == mark("b")
    assert mark_for([mark("a")], "b", FLEET, "claude") is None


def test_marks_survive_their_encoding_and_bad_values_are_skipped() -> None:
    one = mark("claude-sonnet-5")
    decoded = decode([b"claude-sonnet-5", one.encode().encode(), b"broken", b"{not json"])
    assert decoded == (one,)
    assert decode(None) == decode([]) == ()


MODELS = [m.name for p in FLEET.providers.values() for m in p.models]
marks_of = st.lists(
    st.builds(
        lambda model, stale: ModelMark(model, "404", "stale" if stale else "", AT),
        st.sampled_from(MODELS),
        st.booleans(),
    ),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(
    kind_group=st.sampled_from([(g.kinds[0], g.name) for g in FLEET.groups]),
    drawn=st.fixed_dictionaries({name: marks_of for name in FLEET.providers}),
)
def test_a_mark_in_force_acts_as_excluding_its_provider_and_a_stale_one_as_nothing(
    kind_group: tuple[str, str], drawn: dict[str, list[ModelMark]]
) -> None:
    """Metamorphic: the route with marks equals the route without them, where each provider whose group model
    has a mark in force is excluded instead (same choice, same refusal status and wait)."""
    request = replace(REVIEW, kind=kind_group[0], group=kind_group[1])
    group = FLEET.group(request.group)
    live, excluded = dict(READY), set()
    for name, marks in drawn.items():
        real = tuple(replace(m, fingerprint="stale" if m.fingerprint else fingerprint(FLEET, name)) for m in marks)
        live[name] = replace(READY[name], unusable_models=real)
        if any(m.model == FLEET.model_for(group, name) and m.fingerprint != "stale" for m in real):
            excluded.add(name)
    marked = choose_route(request, FLEET, live, [], TODAY)
    plain = choose_route(replace(request, excluded=frozenset(excluded)), FLEET, READY, [], TODAY)
    if isinstance(plain, Route):
        assert isinstance(marked, Route)
        assert (marked.provider, marked.model, marked.rung) == (plain.provider, plain.model, plain.rung)
        assert [n.split(":")[0] for n in marked.passed_over] == [n.split(":")[0] for n in plain.passed_over]
    else:
        assert isinstance(marked, Refusal)
        assert (marked.status, marked.retry_in_s) == (plain.status, plain.retry_in_s)


# --- the marks in Redis ----------------------------------------------------------------------------------


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_a_mark_is_seen_by_every_process_reading_the_state_until_healed(client: redis.Redis, redis_url: str) -> None:
    writer = Breakers.from_fleet(client, FLEET)
    other = redis.Redis.from_url(redis_url)  # another worker's connection
    reader = Breakers.from_fleet(other, FLEET)
    try:
        writer.mark_model("claude", mark("claude-sonnet-5"))
        writer.mark_model("claude", mark("claude-opus-4-5"))
        writer.mark_model("ollama", mark("qwen2.5-coder:7b", "ollama"))
        snapshot = reader.snapshot(["claude", "codex", "ollama"])
        assert {m.model for m in snapshot["claude"].unusable_models} == {"claude-sonnet-5", "claude-opus-4-5"}
        assert snapshot["codex"].unusable_models == ()
        assert reader.status(["claude"])["claude"].unusable_models == snapshot["claude"].unusable_models
        assert reader.heal_models("claude", "claude-opus-4-5") == 1
        assert [m.model for m in reader.snapshot(["claude"])["claude"].unusable_models] == ["claude-sonnet-5"]
        assert reader.heal_models("claude") == 1 and reader.heal_models("claude") == 0
        assert reader.snapshot(["claude"])["claude"].unusable_models == ()
        reader.reset("ollama")  # a reset forgets the marks too
        assert reader.snapshot(["ollama"])["ollama"].unusable_models == ()
    finally:
        other.close()


def test_the_status_view_says_which_marks_are_in_force_under_the_fleet_file(
    client: redis.Redis, redis_url: str
) -> None:
    Breakers.from_fleet(client, FLEET).mark_model("claude", mark("claude-sonnet-5"))
    (row,) = [r for r in providers_view(redis_url, FLEET) if r["provider"] == "claude"]
    assert row["unusable_models"] == [
        {"model": "claude-sonnet-5", "reason": mark("claude-sonnet-5").reason, "at": AT.isoformat(), "in_force": True}
    ]
    (row,) = [r for r in providers_view(redis_url, repriced(FLEET)) if r["provider"] == "claude"]
    assert row["unusable_models"][0]["in_force"] is False


SWITCHYARD = str(Path(sys.executable).parent / "switchyard")


def cli(tmp_path: Path, state_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(SWITCHYARD_HOME=str(tmp_path / "home"), SWITCHYARD_STATE_URL=state_url, COLUMNS="250")
    return subprocess.run([SWITCHYARD, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_status_providers_lists_the_unusable_models_and_breaker_heal_clears_them(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    breakers = Breakers.from_fleet(client, FLEET)
    breakers.mark_model("claude", mark("claude-sonnet-5"))
    breakers.mark_model("claude", mark("claude-opus-4-5"))
    done = cli(tmp_path, redis_url, "status", "--providers", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["provider"]: row for row in json.loads(done.stdout)["providers"]}
    assert sorted(m["model"] for m in rows["claude"]["unusable_models"]) == ["claude-opus-4-5", "claude-sonnet-5"]
    assert all(m["in_force"] for m in rows["claude"]["unusable_models"]) and rows["codex"]["unusable_models"] == []
    table = cli(tmp_path, redis_url, "status", "--providers")
    assert table.returncode == 0, table.stderr
    assert "unusable models" in table.stdout and "claude-sonnet-5: ModelNotFound: claude: HTTP 404" in table.stdout
    healed = cli(tmp_path, redis_url, "breaker", "heal", "claude", "--model", "claude-opus-4-5")
    assert healed.returncode == 0, healed.stderr
    assert "claude: model claude-opus-4-5 usable again (1 mark removed)" in healed.stdout
    assert [m.model for m in breakers.status(["claude"])["claude"].unusable_models] == ["claude-sonnet-5"]
    healed = cli(tmp_path, redis_url, "breaker", "heal", "claude")
    assert healed.returncode == 0 and "every model usable again (1 mark removed)" in healed.stdout
    assert breakers.status(["claude"])["claude"].unusable_models == ()
    refused = cli(tmp_path, redis_url, "breaker", "heal", "gemini")
    assert refused.returncode == 2 and "unknown provider 'gemini'" in refused.stderr


def test_the_api_serves_the_marks(client: redis.Redis, redis_url: str, sqlite_url: str, tmp_path: Path) -> None:
    Breakers.from_fleet(client, FLEET).mark_model("ollama", mark("qwen2.5-coder:7b", "ollama"))
    context = build_context(Settings(home=tmp_path / "home", database_url=sqlite_url, state_url=redis_url))
    with TestClient(create_app(context)) as api:
        rows = {row["provider"]: row for row in api.get("/api/breakers").json()["providers"]}
    (only,) = rows["ollama"]["unusable_models"]
    assert (only["model"], only["in_force"]) == ("qwen2.5-coder:7b", True)
    assert "HTTP 404" in only["reason"]
