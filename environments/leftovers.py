"""Task worktrees left behind: a writing task that fails keeps ``<workspace>/.tasks/<task id>`` for inspection.

:func:`find_leftovers` lists them (with the task's environment and status from SQL) and skips the worktrees
of tasks still queued or running, which are in use; :func:`remove_leftovers` removes the worktrees and
prunes git's bookkeeping. Task branches are kept here: their commits stay reachable after the files are gone
(:mod:`environments.branches` deletes those whose work is merged or no longer wanted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from environments.git import TASK_ID_RE, current_branch
from environments.layout import repo_dir, tasks_dir
from environments.worktrees import remove_task_worktree, worktree_git
from store.db import session_scope
from store.models import ACTIVE_STATUSES, Task


@dataclass(frozen=True)
class Leftover:
    task_id: str
    path: Path
    environment: str | None  # None: no task row (e.g. another database's task)
    status: str | None
    branch: str | None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    def as_dict(self) -> dict[str, object]:
        return {
            "task_id": self.task_id,
            "path": str(self.path),
            "environment": self.environment,
            "status": self.status,
            "branch": self.branch,
            "active": self.active,
        }


def find_leftovers(workspace: Path, *, database_url: str, environments: list[str]) -> list[Leftover]:
    """Task worktrees under ``.tasks`` of the given environments (all when empty), sorted by task id."""
    root = tasks_dir(workspace)
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and TASK_ID_RE.match(p.name)) if root.is_dir() else []
    with session_scope(database_url) as session:
        rows = {task.id: (task.environment, task.status) for task in session.query(Task).filter(Task.id.in_(names))}
    found = []
    for name in names:
        environment, status = rows.get(name, (None, None))
        if environments and environment not in environments:
            continue
        path = root / name
        branch = current_branch(cwd=path) if (path / ".git").exists() else None
        found.append(Leftover(name, path, environment, status, branch))
    return found


def remove_leftovers(workspace: Path, leftovers: list[Leftover]) -> list[Leftover]:
    """Remove the worktrees of tasks that are not active; returns the ones removed."""
    removed = [leftover for leftover in leftovers if not leftover.active]
    for leftover in removed:
        remove_task_worktree(workspace, leftover.task_id, keep_branch=True)
    worktree_git(repo_dir(workspace), ["prune"])
    return removed
