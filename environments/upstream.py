"""The workflow commands that talk to the source repository (``origin`` of the workspace's ``.repo``).

    sync   fetch origin, then fast-forward ``env/<env>`` to ``origin/<base branch>``
    push   push the checked-out branch to origin under the same name
    pull   fetch origin, then fast-forward the checked-out branch to ``origin/<same branch>``

All three only ever fast-forward: when both sides have commits the other lacks, they refuse and say how many
on each side, and nothing moves. Writes to a branch hold the environment's lock. Origin's URL is shown with
any password or token in it masked.
"""

from __future__ import annotations

from pathlib import Path

from environments.git import (
    ahead_behind,
    current_branch,
    is_ancestor,
    redact_url,
    ref_exists,
    rev_parse,
    run_git,
)
from environments.layout import env_lock, holding, read_config, repo_dir
from environments.workflow import Outcome, require_worktree, short
from environments.workspace import EnvironmentInfo

FETCH_TIMEOUT_S = 300


def fetch_origin(workspace: Path) -> None:
    run_git(["fetch", "--quiet", "--prune", "origin"], cwd=repo_dir(workspace), timeout=FETCH_TIMEOUT_S)


def origin_url(workspace: Path) -> str:
    return redact_url(run_git(["config", "--get", "remote.origin.url"], cwd=repo_dir(workspace)).strip())


def sync(workspace: Path, info: EnvironmentInfo, *, fetch: bool = True) -> Outcome:
    """Bring ``env/<env>`` up to origin's base branch, by fast-forward only."""
    path = require_worktree(info)
    if fetch:
        fetch_origin(workspace)
    base = read_config(workspace).base_branch
    upstream = f"refs/remotes/origin/{base}"
    if not ref_exists(upstream, cwd=path):
        return Outcome(info.name, "sync", False, f"origin has no branch {base} (the workspace's base branch)")
    with holding(env_lock(workspace, info.name)):
        return _fast_forward(path, info, f"refs/heads/{info.branch}", upstream, command="sync")


def pull(workspace: Path, info: EnvironmentInfo, *, fetch: bool = True) -> Outcome:
    """Fast-forward the checked-out branch to the branch of the same name on origin."""
    path = require_worktree(info)
    branch = current_branch(cwd=path)
    if branch is None:
        return Outcome(info.name, "pull", False, "the working copy is on a detached HEAD; switch to a branch first")
    if fetch:
        fetch_origin(workspace)
    remote = f"refs/remotes/origin/{branch}"
    if not ref_exists(remote, cwd=path):
        hint = "use sync for the environment branch" if branch == info.branch else "push it first"
        return Outcome(info.name, "pull", False, f"origin has no branch {branch}; {hint}")
    with holding(env_lock(workspace, info.name)):
        return _fast_forward(path, info, f"refs/heads/{branch}", remote, command="pull")


def _fast_forward(path: Path, info: EnvironmentInfo, ref: str, target: str, *, command: str) -> Outcome:
    """Move ``ref`` to ``target`` when that is a fast-forward; in the working copy when it is checked out."""
    old, new = rev_parse(ref, cwd=path), rev_parse(target, cwd=path)
    ahead, behind = ahead_behind(ref, target, cwd=path)
    details = {"branch": short(ref), "from": old, "to": new, "ahead": ahead, "behind": behind}
    if old == new or is_ancestor(new, old, cwd=path):
        message = f"{short(ref)} is up to date with {short(target)}" + (f" ({ahead} ahead)" if ahead else "")
        return Outcome(info.name, command, True, message, {**details, "to": old})
    if not is_ancestor(old, new, cwd=path):
        message = (
            f"{short(ref)} and {short(target)} have diverged ({short(ref)} has {ahead} commit(s) that "
            f"{short(target)} lacks, which has {behind} that {short(ref)} lacks); {command} only fast-forwards, "
            f"so nothing moved: merge or rebase by hand"
        )
        return Outcome(info.name, command, False, message, details)
    if current_branch(cwd=path) == short(ref):
        run_git(["merge", "--ff-only", "--quiet", new], cwd=path)
    else:
        run_git(["update-ref", "-m", f"switchyard {command}", ref, new, old], cwd=path)
    message = f"fast-forwarded {short(ref)} by {behind} commit(s) to {short(target)} ({new[:12]})"
    undo = f"git -C {path} update-ref {ref} {old}"
    return Outcome(info.name, command, True, message, details, undo=undo)


def push(workspace: Path, info: EnvironmentInfo) -> Outcome:
    """Push the checked-out branch to origin (a non-fast-forward is refused by git, and reported)."""
    path = require_worktree(info)
    branch = current_branch(cwd=path)
    if branch is None:
        return Outcome(info.name, "push", False, "the working copy is on a detached HEAD; switch to a branch first")
    sha = rev_parse("HEAD", cwd=path)
    refspec = f"refs/heads/{branch}:refs/heads/{branch}"
    run_git(["push", "--quiet", "origin", refspec], cwd=path, timeout=FETCH_TIMEOUT_S)
    run_git(["update-ref", f"refs/remotes/origin/{branch}", sha], cwd=path)  # what origin now has
    url = origin_url(workspace)
    return Outcome(info.name, "push", True, f"pushed {branch} ({sha[:12]}) to {url}", {"branch": branch, "sha": sha})
