"""Plans as task graphs: validation (cycles, size, depth, kinds, environments), dependency order with a diamond,
a failed sub-task skipping its dependents, and the plan's aggregated result; pure parts first, then in-process
runs against real git, the simulator, Redis and SQLite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pipeline_kit import detail, drain, git, make_context, tasks

from providers.base import ProviderRequest
from simulator.server import BackgroundSimulator
from store import pipeline as rows
from store.db import session_scope
from switchyard.errors import BadAnswer, InputError
from tasks.context import Context
from tasks.dependencies import decide
from tasks.kinds.plan import Plan, check_plan, child_id, find_cycle, order
from tasks.plans import aggregate
from tasks.submit import submit


def plan_of(*subs: tuple[str, list[str]], kind: str = "dev_task") -> Plan:
    return Plan.model_validate(
        {"subtasks": [{"key": k, "kind": kind, "title": f"step {k}", "depends_on": d} for k, d in subs]}
    )


DIAMOND = (("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"]))


# --- pure ------------------------------------------------------------------------------------------------


def test_find_cycle_names_the_cycle() -> None:
    assert find_cycle({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}) is None
    assert find_cycle({"a": ["c"], "b": ["a"], "c": ["b"], "d": []}) == ["a", "c", "b", "a"]
    assert find_cycle({"x": ["x"]}) == ["x", "x"]


def test_check_plan_refuses_what_the_fleet_cannot_run() -> None:
    ok = {"max_subtasks": 4, "environments": ["dev1"], "depth": 0, "max_depth": 1}
    check_plan(plan_of(*DIAMOND), **ok)
    cases = [
        (plan_of(("a", ["b"]), ("b", ["a"])), ok, r"form a cycle: a → b → a"),
        (plan_of(*DIAMOND, ("e", [])), ok, "has 5 sub-tasks; at most 4"),
        (plan_of(("a", []), ("a", [])), ok, "keys repeat"),
        (plan_of(("a", ["zz"])), ok, r"depends on unknown sub-tasks \['zz'\]"),
        (plan_of(("a", []), kind="plan"), {**ok, "depth": 1}, "plans may nest only 1 levels deep"),
    ]
    for plan, limits, message in cases:
        with pytest.raises(BadAnswer, match=message):
            check_plan(plan, **limits)
    with pytest.raises(BadAnswer, match="unknown environment 'dev9'"):
        check_plan(
            Plan.model_validate({"subtasks": [{"key": "a", "kind": "dev_task", "title": "t", "environment": "dev9"}]}),
            **ok,
        )
    with pytest.raises(Exception, match="kind"):
        Plan.model_validate({"subtasks": [{"key": "a", "kind": "pr_integ", "title": "t"}]})


def test_order_puts_dependencies_first() -> None:
    keys = [sub.key for sub in order(plan_of(("d", ["b", "c"]), ("c", ["a"]), ("b", ["a"]), ("a", [])))]
    assert keys.index("a") < keys.index("b") < keys.index("d") and keys.index("c") < keys.index("d")


def test_decide_waits_releases_or_ends() -> None:
    assert decide([("1", "a", "succeeded"), ("2", "b", "running")], on_failure="skip").action == "wait"
    assert decide([("1", "a", "succeeded")], on_failure="skip").action == "release"
    skipped = decide([("1" * 8, "a", "succeeded"), ("2" * 8, "b", "no_provider")], on_failure="skip")
    assert (skipped.action, skipped.status) == ("end", "cancelled")
    assert "22222222 (b) no_provider" in skipped.reason
    assert decide([("1", "a", "failed")], on_failure="fail").status == "failed"


def test_aggregate_outcomes() -> None:
    def child(status: str, *, complete: bool = True, landed: bool = False) -> dict[str, Any]:
        return {"id": "0" * 36, "key": status[:4], "status": status, "chain_complete": complete, "landed": landed}

    done = child("succeeded", landed=True)
    assert aggregate("g", [done, child("succeeded", complete=False)])[1]["outcome"] == "running"
    assert aggregate("g", [done] * 2)[1]["outcome"] == "succeeded"
    summary, data = aggregate("g", [done, child("cancelled")])
    assert data["outcome"] == "partial" and summary == "plan partial: 1/2 sub-tasks landed; not landed: canc"
    assert aggregate("g", [child("failed")])[1]["outcome"] == "failed"
    # succeeded, but its change was not merged (the review said no): the plan did not reach its goal
    assert aggregate("g", [done, child("succeeded")])[1]["outcome"] == "partial"


# --- in-process runs -------------------------------------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path, server: BackgroundSimulator, redis_url: str, sqlite_url: str) -> Context:
    return make_context(tmp_path, server.url, redis_url, sqlite_url)


def plan_script(subtasks: list[dict[str, Any]], broken: str | None = None) -> Any:
    def script(kind: str, request: ProviderRequest) -> str | None:
        if kind == "plan":
            return json.dumps({"subtasks": subtasks})
        if kind == "dev_task" and broken and f"Title: {broken}" in request.prompt:
            return "I could not do it."  # no diff: every provider of the ladder fails the same way
        return None

    return script


def diamond(kind: str = "dev_task") -> list[dict[str, Any]]:
    return [{"key": k, "kind": kind, "title": f"step {k}", "depends_on": d} for k, d in DIAMOND]


def test_a_diamond_runs_in_dependency_order_and_builds_on_its_dependencies(ctx: Context) -> None:
    plan_id = submit({"kind": "plan", "environment": "dev1", "goal": "a diamond"}, context=ctx)
    finished = drain(ctx, plan_script(diamond()))
    ids = {key: child_id(plan_id, key) for key in "abcd"}
    position = {key: finished.index(task_id) for key, task_id in ids.items()}
    assert position["a"] < position["b"] < position["d"] and position["a"] < position["c"] < position["d"]
    plan = detail(ctx, plan_id)
    assert plan["status"] == "succeeded"
    assert plan["result"]["data"]["outcome"] == "succeeded" and plan["result"]["data"]["complete"]
    assert [s["depends_on"] for s in plan["result"]["data"]["subtasks"]] == [[], ["a"], ["a"], ["b", "c"]]
    d = detail(ctx, ids["d"])
    branches = {key: detail(ctx, task_id)["result"]["data"]["branch"] for key, task_id in ids.items()}
    assert d["payload"]["base_branches"] == [branches["b"], branches["c"]]
    assert [t["id"] for t in d["depends_on"]] == [ids["b"], ids["c"]]
    commit = d["result"]["data"]["commit"]  # its branch is gone: merged, and deleted by its integration
    files = git(ctx, "ls-tree", "-r", "--name-only", commit).split()
    assert {f"step_{k}.py" for k in "abcd"} <= set(files)  # d starts from all of a, b and c
    assert [row["kind"] for row in d["chain"]].count("dev_task") == 4
    landed = git(ctx, "ls-tree", "-r", "--name-only", "env/dev1").split()  # every change is in the environment
    assert {f"step_{k}.py" for k in "abcd"} <= set(landed)
    assert all(sub["landed"] and sub["merge_sha"] for sub in plan["result"]["data"]["subtasks"])
    kinds = [row["kind"] for row in d["chain"]]
    assert kinds.count("pr_review") == 4 and kinds.count("pr_integ") == 4  # reviewed, then merged, each


def test_dependents_wait_held_without_a_message(ctx: Context) -> None:
    plan_id = submit({"kind": "plan", "environment": "dev1", "goal": "a diamond"}, context=ctx)
    from pipeline_kit import factory

    from tasks.attempt import Runner

    assert Runner(ctx, make_provider=factory(plan_script(diamond())), sleep=lambda _: None).run(plan_id) == "deferred"
    states = {t.payload.get("plan_key"): (t.status, t.reason or "") for t in tasks(ctx) if t.parent_id}
    assert states["a"] == ("queued", "")
    assert all(states[k][0] == "deferred" and states[k][1].startswith(rows.HELD) for k in "bcd")
    plan = detail(ctx, plan_id)
    assert plan["result"]["data"]["outcome"] == "running"
    assert (plan["status"], plan["reason"]) == ("deferred", rows.LANDING)  # parked: no lease, no message
    parked = next(t for t in tasks(ctx) if t.id == plan_id)
    assert (parked.lease_owner, parked.lease_until) == (None, None)
    # its attempt answered with a plan that was submitted: it succeeded (tasks show said "failed")
    assert [(a["attempt"], a["status"], a["error"]) for a in plan["attempts"]] == [(1, "succeeded", None)]


def test_a_failed_sub_task_skips_its_dependents(ctx: Context) -> None:
    plan_id = submit({"kind": "plan", "environment": "dev1", "goal": "a diamond"}, context=ctx)
    drain(ctx, plan_script(diamond(), broken="step b"))
    status = {k: detail(ctx, child_id(plan_id, k)) for k in "abcd"}
    assert {k: d["status"] for k, d in status.items()} == {
        "a": "succeeded",
        "b": "no_provider",
        "c": "succeeded",
        "d": "cancelled",
    }
    assert "skipped: a task it depends on did not succeed" in status["d"]["reason"]
    assert status["d"]["attempts"] == []  # never run
    plan = detail(ctx, plan_id)
    assert plan["result"]["data"]["outcome"] == "partial"
    assert plan["result"]["summary"] == "plan partial: 2/4 sub-tasks landed; not landed: b, d"
    assert plan["status"] == "failed" and plan["reason"] == plan["result"]["summary"]


def test_a_cycle_is_refused_and_nothing_is_submitted(ctx: Context) -> None:
    cycle = [
        {"key": k, "kind": "dev_task", "title": k, "depends_on": d}
        for k, d in (("a", ["c"]), ("b", ["a"]), ("c", ["b"]))
    ]
    plan_id = submit({"kind": "plan", "environment": "dev1", "goal": "a cycle"}, context=ctx)
    drain(ctx, plan_script(cycle))
    plan = detail(ctx, plan_id)
    assert plan["status"] in {"failed", "no_provider"}
    assert "the plan's dependencies form a cycle: a → c → b → a" in plan["reason"]
    assert [t.id for t in tasks(ctx)] == [plan_id]


def test_submit_depends_on(ctx: Context) -> None:
    first = submit({"kind": "dev_task", "environment": "dev1", "title": "first"}, context=ctx)
    second = submit({"kind": "dev_task", "environment": "dev2", "title": "second", "depends_on": [first]}, context=ctx)
    with session_scope(ctx.database_url) as session:
        assert rows.dependents_of(session, first) == [second]
    assert drain(ctx) == [first, second]
    first_branch = detail(ctx, first)["result"]["data"]["branch"]
    assert detail(ctx, second)["payload"]["base_branches"] == [first_branch]
    with pytest.raises(InputError, match="which does not exist"):
        submit({"kind": "dev_task", "environment": "dev1", "title": "x", "depends_on": ["nope"]}, context=ctx)


def test_a_plan_left_parked_is_ended_by_the_senders_sweep(ctx: Context) -> None:
    """The last sub-task ends its plan as it finishes; when that step was lost (a worker died between its
    follow-ups and the plan's update), the periodic sender's sweep ends the plan."""
    from sqlalchemy import update

    from store.models import Task
    from tasks import dependencies
    from tasks.plans import sweep_landing

    plan_id = submit({"kind": "plan", "environment": "dev1", "goal": "a diamond"}, context=ctx)
    drain(ctx, plan_script(diamond()))
    assert detail(ctx, plan_id)["status"] == "succeeded"
    with session_scope(ctx.database_url) as session:  # as if the last update of the plan never happened
        session.execute(
            update(Task).where(Task.id == plan_id).values(status="deferred", reason=rows.LANDING, finished_at=None)
        )
    assert sweep_landing(ctx, settle_dependents=dependencies.on_finished) == 1
    plan = detail(ctx, plan_id)
    assert plan["status"] == "succeeded" and plan["result"]["data"]["landed"] == 4
    assert sweep_landing(ctx, settle_dependents=dependencies.on_finished) == 0  # nothing parked any more
