"""Deleting the ``task/*`` branches of finished tasks: the pure rules, then a sweep over real git and SQLite."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from environments.branches import BranchFacts, keep_reason, sweep_task_branches, task_branch
from environments.git import NO_SIGN, branch_exists, run_git
from environments.merge import merge_into_environment
from environments.sample import make_sample_repo
from environments.workspace import init_workspace
from environments.worktrees import remove_task_worktree, task_worktree
from store import repo
from store.db import dispose_all, session_scope
from store.migrate import upgrade
from store.models import TaskDependency


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (BranchFacts("feature/x", merged_into="env/dev1"), "not a task branch"),
        (BranchFacts("task/pr_impl-aaaaaaaa", checked_out=True, merged_into="env/dev1"), "checked out in a worktree"),
        (BranchFacts("task/pr_impl-aaaaaaaa", needed_by=("bbbbbbbb (queued)",), merged_into="env/dev1"),
         "needed by bbbbbbbb (queued)"),
        (BranchFacts("task/pr_impl-aaaaaaaa", needed_by=("b (running)",), creator_status="cancelled"),
         "needed by b (running)"),
        (BranchFacts("task/pr_impl-aaaaaaaa", merged_into="env/dev1", creator_status="succeeded"), None),
        (BranchFacts("task/pr_impl-aaaaaaaa", merged_into="env/dev1-qa"), None),
        (BranchFacts("task/dev_task-aaaaaaaa", creator_status="cancelled"), None),
        (BranchFacts("task/dev_task-aaaaaaaa", creator_status="succeeded"),
         "its work is not merged into any environment branch"),
        (BranchFacts("task/dev_task-aaaaaaaa", creator_status="failed"),
         "its work is not merged into any environment branch"),
        (BranchFacts("task/dev_task-aaaaaaaa"), "its work is not merged into any environment branch"),
    ],
)  # fmt: skip
def test_keep_reason(facts: BranchFacts, reason: str | None) -> None:
    assert keep_reason(facts) == reason


def test_task_branch_name() -> None:
    assert task_branch("pr_impl", "0123456789abcdef") == "task/pr_impl-01234567"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    sample = make_sample_repo(tmp_path / "sample")
    init_workspace(str(sample), tmp_path / "ws", ["dev1", "dev2"], ["dev", "qa"], base_port=8081, check_command="true")
    return tmp_path / "ws"


@pytest.fixture
def db(sqlite_url: str) -> str:
    upgrade(sqlite_url)
    yield sqlite_url  # type: ignore[misc]
    dispose_all()


def new_task(db: str, kind: str, status: str, *, payload: dict[str, object] | None = None, env: str = "dev1") -> str:
    task_id = str(uuid.uuid4())
    with session_scope(db) as session:
        repo.create_task(
            session, task_id=task_id, kind=kind, group="g", environment=env, stage="dev", title="t",
            payload=payload or {},
        )  # fmt: skip
        if status != "queued":
            repo.claim_task(session, task_id=task_id)
        if status not in ("queued", "running"):
            repo.finish_task(session, task_id=task_id, status=status, reason="test")
    return task_id


def finish(db: str, task_id: str, status: str) -> None:
    with session_scope(db) as session:
        repo.claim_task(session, task_id=task_id)
        repo.finish_task(session, task_id=task_id, status=status, reason="test")


def commit_on(workspace: Path, branch: str, *, env: str = "dev1") -> None:
    """A commit on ``branch`` (made from env/<env> when new), the way a writing task makes it."""
    work = f"w-{uuid.uuid4().hex[:8]}"
    path = task_worktree(workspace, env, work, base_branch=f"env/{env}", branch=branch)
    (path / f"{work}.txt").write_text(f"{branch}\n")
    run_git(["add", "--all"], cwd=path)
    run_git([*NO_SIGN, "commit", "-q", "-m", f"work on {branch}"], cwd=path)
    remove_task_worktree(workspace, work)


def exists(workspace: Path, branch: str) -> bool:
    return branch_exists(branch, cwd=workspace / ".repo")


def test_a_sweep_deletes_merged_and_abandoned_task_branches_and_keeps_what_is_needed(workspace: Path, db: str) -> None:
    merged = task_branch("pr_impl", new_task(db, "pr_impl", "succeeded"))
    unmerged = task_branch("pr_impl", new_task(db, "pr_impl", "succeeded"))
    abandoned = task_branch("dev_task", new_task(db, "dev_task", "cancelled"))
    based_on = task_branch("dev_task", new_task(db, "dev_task", "succeeded"))
    dependent = new_task(db, "dev_task", "queued", payload={"base_branches": [based_on]})
    waited_for_id = new_task(db, "dev_task", "succeeded")
    waited_for = task_branch("dev_task", waited_for_id)
    held = new_task(db, "dev_task", "queued")
    failed_id = new_task(db, "dev_task", "failed")
    failed = task_branch("dev_task", failed_id)
    with session_scope(db) as session:  # held: its base_branches are filled in only when it is released
        session.add(TaskDependency(task_id=held, depends_on=waited_for_id))
        repo.upsert_result(
            session, environment="dev1", stage="dev", task_id=waited_for_id, kind="dev_task", status="succeeded",
            summary="s", data={"branch": waited_for},
        )  # fmt: skip
    for branch in (merged, unmerged, abandoned, based_on, waited_for, "feature/user-work"):
        commit_on(workspace, branch)
    for branch in (merged, based_on, waited_for, "feature/user-work"):
        merge_into_environment(workspace, "dev1", branch, message=f"merge {branch}")
    kept = task_worktree(workspace, "dev1", failed_id, base_branch="env/dev1", branch=failed)  # for inspection
    (kept / "half-done.txt").write_text("work a failed task committed\n")
    run_git(["add", "--all"], cwd=kept)
    run_git([*NO_SIGN, "commit", "-q", "-m", "half done"], cwd=kept)

    swept = sweep_task_branches(workspace, database_url=db)

    assert sorted(swept.deleted) == sorted([merged, abandoned])
    assert swept.kept == {
        unmerged: "its work is not merged into any environment branch",
        based_on: f"needed by {dependent[:8]} (queued)",
        waited_for: f"needed by {held[:8]} (queued)",
        failed: "checked out in a worktree",
    }
    assert not exists(workspace, merged) and not exists(workspace, abandoned)
    assert exists(workspace, "feature/user-work") and exists(workspace, failed)

    assert sweep_task_branches(workspace, database_url=db, branches=[based_on], exclude={dependent}).deleted == [
        based_on
    ]  # the task asking (e.g. the running integration) does not count
    finish(db, held, "succeeded")
    remove_task_worktree(workspace, failed_id)
    again = sweep_task_branches(workspace, database_url=db)
    assert again.deleted == [waited_for]
    assert set(again.kept) == {unmerged, failed}  # a failed task's work is kept: it is not merged
    assert sweep_task_branches(workspace, database_url=db, environments=["dev2"]).kept == {}


def test_the_branch_an_active_writing_task_will_make_is_not_deleted(workspace: Path, db: str) -> None:
    running = task_branch("pr_impl", new_task(db, "pr_impl", "running"))
    commit_on(workspace, running)
    merge_into_environment(workspace, "dev1", running, message="merged early")
    swept = sweep_task_branches(workspace, database_url=db, branches=[running, "task/gone-00000000", "env/dev1"])
    assert swept.deleted == []
    assert swept.kept[running].startswith("needed by ")
    assert swept.kept["task/gone-00000000"] == "its work is not merged into any environment branch"
