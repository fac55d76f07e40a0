"""Deleting the ``task/*`` branches of finished tasks, and never one that a task still needs.

A writing task (``pr_impl``, ``dev_task``) commits on ``task/<kind>-<id8>`` (:func:`task_branch`); a review
reads that branch, a later round commits on it again, an integration merges it, a dependent task starts
from it. :func:`keep_reason` decides from facts alone; the first rule that applies wins:

1. only ``task/*`` branches are ever deleted (a branch the user named is the user's);
2. a branch checked out in a worktree is kept (a task at work, or a failed task's worktree kept for
   inspection: ``switchyard env clean-tasks`` removes those, and the branch goes with a later sweep);
3. a branch an active task (queued, running, deferred) needs is kept: as its branch, among its
   ``base_branches``, as the branch of a task it waits for, or as the branch it will create;
4. a branch whose tip an environment branch (``env/*``) contains is deleted: its work is merged;
5. a branch whose creating task was cancelled is deleted: its work is no longer wanted;
6. anything else is kept: the unmerged work of a succeeded or failed task is the user's to merge or drop.

:func:`sweep_task_branches` gathers the facts (SQL, git) and deletes under the repository lock. A task
submitted between the gathering and the deletion that names a branch being deleted fails with "branch does
not exist", as it would had the user deleted it; nothing half-done is left.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from environments.git import run_git
from environments.layout import holding, repo_dir, repo_lock
from environments.worktrees import list_worktrees
from store.db import session_scope
from store.models import ACTIVE_STATUSES, Result, Task, TaskDependency

log = logging.getLogger(__name__)
PREFIX = "task/"
WRITING_KINDS = ("pr_impl", "dev_task")


def task_branch(kind: str, task_id: str) -> str:
    """The branch a writing task commits on when its request names none."""
    return f"{PREFIX}{kind}-{task_id[:8]}"


@dataclass(frozen=True)
class BranchFacts:
    branch: str
    checked_out: bool = False
    needed_by: tuple[str, ...] = ()  # active tasks that need it, as "id8 (status)"
    merged_into: str | None = None  # an env/* branch that contains its tip
    creator_status: str | None = None  # the status of the task that made it (None: unknown)


def keep_reason(facts: BranchFacts) -> str | None:
    """Why ``facts.branch`` must stay, or None when it may be deleted (the rules in the module docstring)."""
    if not facts.branch.startswith(PREFIX):
        return "not a task branch"
    if facts.checked_out:
        return "checked out in a worktree"
    if facts.needed_by:
        return f"needed by {', '.join(facts.needed_by)}"
    if facts.merged_into is not None or facts.creator_status == "cancelled":
        return None
    return "its work is not merged into any environment branch"


@dataclass(frozen=True)
class BranchSweep:
    deleted: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # branch -> why

    def as_dict(self) -> dict[str, object]:
        return {"deleted": self.deleted, "kept": self.kept}


def sweep_task_branches(
    workspace: Path,
    *,
    database_url: str,
    branches: list[str] | None = None,
    exclude: Collection[str] = (),
    environments: Collection[str] = (),
) -> BranchSweep:
    """Delete those of ``branches`` (default: every ``task/*`` branch) that no task needs any more.

    ``exclude``: ids of tasks not to count as needing a branch (the running task that asks for the sweep).
    ``environments``: when given, only branches whose creating task belongs to one of them are considered.
    """
    repo = repo_dir(workspace)
    names = task_branches(repo) if branches is None else [b for b in branches if b.startswith(PREFIX)]
    with session_scope(database_url) as session:
        needed = needed_branches(session, exclude=exclude)
        creators = {name: creator_of(session, name) for name in names}
    if environments:
        names = [name for name in names if (creators[name] or ("", ""))[1] in environments]
    sweep = BranchSweep()
    with holding(repo_lock(workspace)):
        checked_out = {branch for branch in list_worktrees(repo).values() if branch}
        for name in names:
            creator = creators[name]
            facts = BranchFacts(
                name,
                checked_out=name in checked_out,
                needed_by=tuple(needed.get(name, ())),
                merged_into=merged_into(repo, name),
                creator_status=creator[0] if creator else None,
            )
            _apply(repo, facts, sweep)
    return sweep


def _apply(repo: Path, facts: BranchFacts, sweep: BranchSweep) -> None:
    reason = keep_reason(facts)
    if reason is not None:
        sweep.kept[facts.branch] = reason
        return
    run_git(["branch", "-D", "--quiet", facts.branch], cwd=repo)
    sweep.deleted.append(facts.branch)
    why = f"merged into {facts.merged_into}" if facts.merged_into else "its task was cancelled"
    log.info("deleted branch %s (%s)", facts.branch, why)


def task_branches(repo: Path) -> list[str]:
    out = run_git(["for-each-ref", "--format=%(refname:short)", f"refs/heads/{PREFIX}"], cwd=repo)
    return [line for line in out.splitlines() if line]


def merged_into(repo: Path, branch: str) -> str | None:
    """The first ``env/*`` branch that contains ``branch``'s tip, or None (also when the branch is gone)."""
    out = run_git(
        ["for-each-ref", "--format=%(refname:short)", "--contains", f"refs/heads/{branch}", "refs/heads/env/"],
        cwd=repo,
        check=False,
    )
    return out.split()[0] if out.split() else None


def needed_branches(session: Session, *, exclude: Collection[str]) -> dict[str, list[str]]:
    """Branch -> the active tasks that need it (rule 3), as "id8 (status)"."""
    needed: dict[str, list[str]] = {}
    active = session.scalars(select(Task).where(Task.status.in_(ACTIVE_STATUSES))).all()
    for task in active:
        if task.id in exclude:
            continue
        for branch in _branches_named(session, task):
            needed.setdefault(branch, []).append(f"{task.id[:8]} ({task.status})")
    return needed


def _branches_named(session: Session, task: Task) -> set[str]:
    payload = task.payload or {}
    named = {str(payload["branch"])} if payload.get("branch") else set()
    if not payload.get("branch") and task.kind in WRITING_KINDS:
        named.add(task_branch(task.kind, task.id))
    named.update(str(b) for b in payload.get("base_branches") or [])
    waits_for = select(TaskDependency.depends_on).where(TaskDependency.task_id == task.id)
    for result in session.scalars(select(Result).where(Result.task_id.in_(waits_for))):
        if (result.data or {}).get("branch"):
            named.add(str(result.data["branch"]))
    return named


def creator_of(session: Session, branch: str) -> tuple[str, str] | None:
    """(status, environment) of the task that made ``task/<kind>-<id8>``; None when not exactly one matches."""
    kind, _, short = branch.removeprefix(PREFIX).rpartition("-")
    if kind not in WRITING_KINDS or len(short) != 8:
        return None
    rows = session.execute(
        select(Task.status, Task.environment).where(Task.kind == kind, Task.id.like(f"{short}%")).limit(2)
    ).all()
    return (rows[0][0], rows[0][1]) if len(rows) == 1 else None
