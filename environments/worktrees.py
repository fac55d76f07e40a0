"""Worktrees on the shared bare repository: one per environment, one per writing task.

``git worktree add/remove/prune`` and branch creation edit ``.repo/worktrees``, and ``git worktree list``
reads it: a list that runs while a worktree is being added fails (``failed to read
'worktrees/<id>/locked'`` or ``…/commondir``). So every ``git worktree`` command Switchyard runs goes through
:func:`worktree_git`, which holds the repository lock (``.locks/repo.lock``, re-entrant per thread); threads
and processes may call these functions at once. A list that fails on a half-written entry anyway (a ``git
worktree add`` run by hand in the workspace) is read again, a few times: defense in depth, not the fix.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from environments.git import END_OF_OPTIONS, branch_exists, check_branch_name, check_task_id, current_branch, run_git
from environments.layout import holding, repo_dir, repo_lock, require_environment, tasks_dir
from switchyard.errors import GitError, InputError

LIST_READS = 4  # tries of ``git worktree list`` when an entry is half-written by a git run outside the lock
LIST_RETRY_S = 0.05
TORN_READ = "failed to read"  # git's message for an entry of .repo/worktrees that vanished or is half-written


def worktree_git(repo: Path, args: list[str], *, check: bool = True) -> str:
    """``git worktree <args>`` on the bare ``repo`` (``<workspace>/.repo``), holding the repository lock."""
    with holding(repo_lock(repo.parent)):
        return run_git(["worktree", *args], cwd=repo, check=check)


def list_worktrees(repo: Path, *, sleep: Callable[[float], None] = time.sleep) -> dict[Path, str | None]:
    """Registered worktrees of ``repo`` (resolved path → checked-out branch, None when detached or bare)."""
    for attempt in range(1, LIST_READS + 1):
        try:
            return parse_worktree_list(worktree_git(repo, ["list", "--porcelain"]))
        except GitError as exc:
            if attempt == LIST_READS or TORN_READ not in (exc.stderr or ""):
                raise
            sleep(LIST_RETRY_S * attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


def parse_worktree_list(out: str) -> dict[Path, str | None]:
    """``git worktree list --porcelain`` as resolved path → checked-out branch (None: detached or bare)."""
    found: dict[Path, str | None] = {}
    path: Path | None = None
    for line in out.splitlines():
        if line.startswith("worktree "):
            path = Path(line.removeprefix("worktree ")).resolve()
            found[path] = None
        elif line.startswith("branch refs/heads/") and path is not None:
            found[path] = line.removeprefix("branch refs/heads/")
    return found


def ensure_worktree(repo: Path, path: Path, branch: str, *, start_point: str) -> Path:
    """Make ``path`` a worktree on ``branch``, creating the branch from ``start_point`` if it is missing.

    An existing worktree on ``branch`` is reused as it is. Call with the repository lock held (the check and the
    add must be one step).
    """
    worktree_git(repo, ["prune"])
    registered = list_worktrees(repo)
    here = path.resolve()
    if here in registered:
        if registered[here] != branch:
            raise InputError(f"{path} is already a worktree on {registered[here] or 'a detached HEAD'}, not {branch}")
        return path
    if path.exists():
        raise InputError(f"{path} exists but is not a worktree of {repo}; move it away and run again")
    args = ["add", "--quiet", END_OF_OPTIONS, str(path), branch]
    if not branch_exists(branch, cwd=repo):
        args = ["add", "--quiet", "-b", branch, END_OF_OPTIONS, str(path), start_point]
    worktree_git(repo, args)
    return path


def _require_branch(repo: Path, branch: str) -> None:
    if not branch_exists(check_branch_name(branch), cwd=repo):
        raise InputError(f"branch {branch!r} does not exist in {repo}")


def task_worktree(workspace: Path, environment: str, task_id: str, *, base_branch: str, branch: str) -> Path:
    """``<workspace>/.tasks/<task_id>`` checked out on ``branch`` (made from ``base_branch`` when new).

    Redelivery is safe: an existing worktree on ``branch`` is returned as it is, and an existing ``branch``
    without a worktree is checked out again with its commits. A directory left behind by a crash in the
    middle of ``worktree add`` is removed first (``.tasks`` belongs to Switchyard alone).
    """
    require_environment(workspace, environment)
    check_task_id(task_id)
    check_branch_name(branch)
    repo = repo_dir(workspace)
    path = tasks_dir(workspace) / task_id
    with holding(repo_lock(workspace)):
        _require_branch(repo, base_branch)
        worktree_git(repo, ["prune"])
        if path.exists() and path.resolve() not in list_worktrees(repo):
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return ensure_worktree(repo, path, branch, start_point=base_branch)


def remove_task_worktree(workspace: Path, task_id: str, *, keep_branch: bool = True) -> None:
    """Remove the task's worktree, discarding uncommitted changes; delete its branch unless ``keep_branch``.

    Removing a worktree that is already gone does nothing.
    """
    check_task_id(task_id)
    repo = repo_dir(workspace)
    path = tasks_dir(workspace) / task_id
    with holding(repo_lock(workspace)):
        branch = current_branch(cwd=path) if (path / ".git").exists() else None
        if path.resolve() in list_worktrees(repo):
            worktree_git(repo, ["remove", "--force", str(path)])
        elif path.exists():
            shutil.rmtree(path)
        worktree_git(repo, ["prune"])
        if branch and not keep_branch:
            run_git(["branch", "-D", "--quiet", END_OF_OPTIONS, branch], cwd=repo)


def detached_worktree(workspace: Path, task_id: str, commit: str) -> Path:
    """A fresh worktree at ``<workspace>/.tasks/<task_id>`` with a detached HEAD at ``commit``.

    Whatever a crashed run left at that path is removed first: a merge always starts from a clean tree.
    """
    check_task_id(task_id)
    repo = repo_dir(workspace)
    path = tasks_dir(workspace) / task_id
    with holding(repo_lock(workspace)):
        if path.resolve() in list_worktrees(repo):
            worktree_git(repo, ["remove", "--force", str(path)])
        elif path.exists():
            shutil.rmtree(path)
        worktree_git(repo, ["prune"])
        path.parent.mkdir(parents=True, exist_ok=True)
        worktree_git(repo, ["add", "--quiet", "--detach", str(path), commit])
    return path


def worktree_of(workspace: Path, branch: str) -> Path | None:
    """The worktree that has ``branch`` checked out (an environment's own worktree), if any does.

    Takes the repository lock (through :func:`list_worktrees`): a merge asks this while other tasks add theirs.
    """
    for path, checked_out in list_worktrees(repo_dir(workspace)).items():
        if checked_out == branch:
            return path
    return None
