"""The PR pipeline in-process: implement → review (another provider) → request changes → implement again →
approve → integrate, with conflicts resolved or refused and a failing check, against real git repositories,
the simulator over HTTP, Redis and SQLite, driven by the in-process Runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_kit import detail, drain, factory, git, make_context, tasks, verdict, workspace

from cli.detail import show_detail
from cli.render import console
from environments.git import run_git
from environments.patch import apply_and_commit
from providers.base import ProviderRequest
from simulator.server import BackgroundSimulator
from store.db import session_scope
from store.models import Environment
from tasks.attempt import Runner
from tasks.claim import finished_task
from tasks.context import Context
from tasks.kinds.base import Answer, TaskInfo
from tasks.kinds.integrate import IntegrateHandler
from tasks.pipeline import follow_up_id, next_step
from tasks.schemas import SubmitRequest
from tasks.submit import submit

pytestmark = pytest.mark.integration

GREETING_EDIT = """\
--- a/app/greeting.py
+++ b/app/greeting.py
@@ -5,3 +5,3 @@ def greet(name: str) -> str:
     \"\"\"Return a friendly greeting for ``name``.\"\"\"
-    name = name.strip() or "world"
+    name = name.strip() or "{word}"
     return f"Hello, {{name}}!"
"""


@pytest.fixture
def ctx(tmp_path: Path, server: BackgroundSimulator, redis_url: str, sqlite_url: str) -> Context:
    return make_context(tmp_path, server.url, redis_url, sqlite_url)


def impl(ctx: Context, title: str = "greet there", **extra: object) -> str:
    return submit({"kind": "pr_impl", "environment": "dev1", "title": title, **extra}, context=ctx)


def by_kind(ctx: Context) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for task in tasks(ctx):
        found.setdefault(task.kind, []).append(task.id)
    return found


def test_impl_review_request_changes_impl_again_approve_integrate(ctx: Context) -> None:
    reviews = iter([verdict("request_changes", "Name the change file after the task."), None])

    def script(kind: str, request: ProviderRequest) -> str | None:
        return next(reviews) if kind == "pr_review" else None

    first = impl(ctx)
    drain(ctx, script)
    kinds = by_kind(ctx)
    assert [len(kinds[k]) for k in ("pr_impl", "pr_review", "pr_integ")] == [2, 2, 1]
    impl1, impl2 = (detail(ctx, i) for i in kinds["pr_impl"])
    review1, review2 = (detail(ctx, i) for i in kinds["pr_review"])
    integ = detail(ctx, kinds["pr_integ"][0])
    assert all(d["status"] == "succeeded" for d in (impl1, impl2, review1, review2, integ))

    # the chain: each follow-up is the child of the task that caused it, with a derived id
    assert impl1["id"] == first
    assert review1["parent_id"] == first and review1["id"] == follow_up_id(first, "review")
    assert impl2["parent_id"] == review1["id"] and review2["parent_id"] == impl2["id"]
    assert integ["parent_id"] == review2["id"]
    chain = [(row["kind"], row["depth"]) for row in detail(ctx, integ["id"])["chain"]]
    assert chain == [("pr_impl", 0), ("pr_review", 1), ("pr_impl", 2), ("pr_review", 3), ("pr_integ", 4)]

    # a reviewer other than the implementer; the comments go back to the implementer on the same branch
    branch = impl1["result"]["data"]["branch"]
    assert impl1["provider"] == "codex" and review1["provider"] == "claude"
    assert review1["payload"]["avoid_providers"] == ["codex"]
    assert impl2["payload"]["round"] == 2 and impl2["payload"]["branch"] == branch
    assert "Name the change file after the task." in impl2["payload"]["feedback"]
    rows = detail(ctx, first)["reviews"]
    assert [(r["round"], r["verdict"], r["reviewer"]) for r in rows] == [
        (1, "request_changes", "claude"),
        (2, "approve", "claude"),
    ]
    assert rows[0]["comments"][0] == {
        "file": "app/greeting.py",
        "line": 6,
        "body": "Name the change file after the task.",
    }

    # both rounds' commits are on the branch, and the branch is merged into env/dev1 after the check passed
    (merge,) = detail(ctx, first)["merges"]
    assert (merge["status"], merge["check_passed"], merge["branch"]) == ("merged", True, branch)
    assert merge["merge_sha"] == git(ctx, "rev-parse", "env/dev1")
    files = git(ctx, "ls-tree", "-r", "--name-only", "env/dev1").split()
    # named after the title; round 2 finds greet_there.py on the branch, so its diff adds a module of its own
    assert {"greet_there.py", f"greet_there_{impl2['id'][:8]}.py"} <= set(files)
    assert impl2["result"]["data"]["commits"] == [impl2["result"]["data"]["commit"]]
    assert impl1["result"]["data"]["insertions"] == 6
    assert not any((workspace(ctx) / ".tasks" / i).exists() for i in kinds["pr_impl"] + kinds["pr_integ"])
    assert git(ctx, "branch", "--list", "task/*") == ""  # merged, needed by no task: deleted after the merge

    # a redelivery after the merge (the branch is gone) reports the journal's merge instead of merging again
    found = finished_task(ctx, integ["id"])
    assert found is not None
    decision = json.dumps({"decision": "merge", "commit_message": "again"})
    again = IntegrateHandler().act(ctx, found[0], Answer(decision, "ollama", "m"), assist=None)  # type: ignore[arg-type]
    assert again.data["merge_commit"] == merge["merge_sha"] == git(ctx, "rev-parse", "env/dev1")
    assert not again.data["already_merged"] and again.data["files"]


def test_request_changes_goes_back_at_most_review_rounds_times(ctx: Context) -> None:
    def script(kind: str, request: ProviderRequest) -> str | None:
        return verdict("request_changes") if kind == "pr_review" else None

    impl(ctx)
    drain(ctx, script)
    kinds = by_kind(ctx)
    assert [len(kinds.get(k, [])) for k in ("pr_impl", "pr_review", "pr_integ")] == [2, 2, 0]
    assert git(ctx, "rev-parse", "env/dev1") == git(ctx, "rev-parse", "main")


def test_no_pipeline_and_comment_verdict_end_the_chain(ctx: Context) -> None:
    impl(ctx, "alone", pipeline=False)
    drain(ctx)
    assert list(by_kind(ctx)) == ["pr_impl"]
    impl(ctx, "commented")
    drain(ctx, lambda kind, _: verdict("comment") if kind == "pr_review" else None)
    assert sorted(len(ids) for ids in by_kind(ctx).values()) == [1, 2]  # one review, no integration
    branches = git(ctx, "branch", "--list", "--format=%(refname:short)", "task/*").split()
    assert branches == sorted(f"task/pr_impl-{i[:8]}" for i in by_kind(ctx)["pr_impl"])  # unmerged work stays


def _conflicting_impl(ctx: Context) -> str:
    """A pr_impl (by codex) changing the greeting, then the same line changed differently on env/dev1."""

    def script(kind: str, request: ProviderRequest) -> str | None:
        return f"```diff\n{GREETING_EDIT.format(word='there')}```" if kind == "pr_impl" else None

    task_id = impl(ctx, "greet there")
    assert Runner(ctx, make_provider=factory(script), sleep=lambda _: None).run(task_id) == "succeeded"
    apply_and_commit(workspace(ctx) / "dev1", GREETING_EDIT.format(word="everyone"), message="everyone")
    return git(ctx, "rev-parse", "env/dev1")


def test_a_conflict_is_resolved_by_the_implementer(ctx: Context) -> None:
    before = _conflicting_impl(ctx)
    drain(ctx)  # review (approve) → integrate: conflict → codex resolves it (the simulator keeps both sides)
    integ = detail(ctx, by_kind(ctx)["pr_integ"][0])
    assert integ["status"] == "succeeded", integ["reason"]
    (merge,) = integ["merges"]
    assert (merge["status"], merge["conflict_files"], merge["resolved_by"]) == ("merged", ["app/greeting.py"], "codex")
    assert [a["provider"] for a in integ["attempts"]] == ["ollama", "codex"]  # the decision, then the resolution
    text = (workspace(ctx) / "dev1" / "app" / "greeting.py").read_text()
    assert '"there"' in text and '"everyone"' in text and "<<<<<<<" not in text
    assert git(ctx, "rev-parse", "env/dev1^1") == before
    assert run_git(["status", "--porcelain"], cwd=workspace(ctx) / "dev1") == ""


def test_a_conflict_the_implementer_cannot_resolve_fails_naming_the_file(ctx: Context) -> None:
    before = _conflicting_impl(ctx)

    def script(kind: str, request: ProviderRequest) -> str | None:
        return json.dumps({"files": []}) if kind == "resolve_conflict" else None

    drain(ctx, script)
    integ = detail(ctx, by_kind(ctx)["pr_integ"][0])
    assert integ["status"] == "failed"
    assert "conflicts in app/greeting.py" in integ["reason"] and "leaves out app/greeting.py" in integ["reason"]
    assert integ["merges"][0]["status"] == "conflict"
    assert git(ctx, "rev-parse", "env/dev1") == before
    assert (workspace(ctx) / ".tasks" / integ["id"]).is_dir()  # kept for inspection
    assert git(ctx, "branch", "--list", f"task/pr_impl-{by_kind(ctx)['pr_impl'][0][:8]}") != ""  # not merged


def test_a_failing_check_refuses_the_merge_and_leaves_the_branch(ctx: Context) -> None:
    with session_scope(ctx.database_url) as session:
        env = session.get(Environment, "dev1")
        assert env is not None
        env.check_command = "python3 -c 'import sys; print(\"2 tests failed\"); sys.exit(3)'"
    before = git(ctx, "rev-parse", "env/dev1")
    task_id = submit({"kind": "pr_integ", "environment": "dev1", "branch": "feature/sample-1"}, context=ctx)
    drain(ctx)
    integ = detail(ctx, task_id)
    assert integ["status"] == "failed"
    assert "CheckFailed" in integ["reason"] and "2 tests failed" in integ["reason"]
    (merge,) = integ["merges"]
    assert (merge["status"], merge["check_passed"], merge["check"]["exit_code"]) == ("check_failed", False, 3)
    assert git(ctx, "rev-parse", "env/dev1") == before
    assert run_git(["status", "--porcelain"], cwd=workspace(ctx) / "dev1") == ""


def test_next_step_is_pure_and_follows_the_fleet(ctx: Context) -> None:
    def info(kind: str, **payload: object) -> TaskInfo:
        request = SubmitRequest.model_validate({"kind": kind, "environment": "dev1", "title": "t", **payload})
        return TaskInfo("00000000-0000-0000-0000-000000000001", kind, kind, "dev1", "dev", request, Path("/ws"))

    step = next_step(ctx, info("pr_impl"), {"branch": "task/x", "author": "ollama"})
    assert step is not None and step[0] == "review" and step[1]["avoid_providers"] == ["ollama"]
    assert next_step(ctx, info("pr_impl", pipeline=False), {"branch": "task/x"}) is None
    assert next_step(ctx, info("dev_task"), {"branch": "task/x"}) is None
    review = info("pr_review", branch="task/x", review_of="r", round=2)
    assert next_step(ctx, review, {"verdict": "request_changes"}) is None  # rounds used up
    assert next_step(ctx, review, {"verdict": "approve"}) == (
        "integrate",
        {
            "environment": "dev1",
            "stage": "dev",
            "branch": "task/x",
            "title": "t",
            "description": "",
            "parent_id": review.id,
            "depth": 0,
            "kind": "pr_integ",
            "implementer": None,
        },
    )
    assert next_step(ctx, info("pr_review", branch="task/x"), {"verdict": "approve"}) is None  # not in a chain


def test_tasks_show_prints_the_chain_reviews_and_merges(ctx: Context) -> None:
    first = impl(ctx, "show me")
    drain(ctx)
    integ_id = by_kind(ctx)["pr_integ"][0]
    with console.capture() as captured:
        show_detail(detail(ctx, first))
    out = captured.get()
    review_id = follow_up_id(first, "review")
    assert f"{first[:8]} pr_impl succeeded [codex]: committed" in out and "◀" in out
    assert f"  {review_id[:8]} pr_review succeeded [claude]: approve:" in out
    assert f"    {integ_id[:8]} pr_integ succeeded [ollama]: task/pr_impl-{first[:8]} merged into env/dev1" in out
    assert "Reviews" in out and "Merges" in out and "│ merged │" in out  # tables wrap to the terminal's width
    assert "result (dev1/dev): committed" in out
