"""The destructive workflow commands: ``clean``, ``rebase``, ``reset``. Each says how to undo what it did.

    clean    remove untracked files (``git clean -fd``; ignored files stay) and discard changes to tracked
             files. Tracked changes are first saved as a stash entry, so they can be applied again; removed
             untracked files cannot be recovered, which is why :func:`preview` lists them first.
    rebase   replay the checked-out feature branch onto ``env/<env>``; on a conflict the rebase is aborted
             and the branch is exactly as before. Never on ``env/<env>`` itself (merged work would be rewritten).
    reset    ``reset --hard`` the checked-out branch to ``env/<env>`` (or a ref given); uncommitted changes
             to tracked files are saved as a stash entry first.

The undo hints name exact commit shas (``git -C <path> reset --hard <sha>``): unlike ``HEAD@{1}`` they stay
right however many reflog entries a command writes. Asking for confirmation is the caller's job (the CLI).
"""

from __future__ import annotations

from pathlib import Path

from environments.git import NO_SIGN, changed_files, current_branch, is_ancestor, rev_parse, run_git, user_identity
from environments.layout import env_lock, holding
from environments.workflow import Outcome, require_worktree
from environments.workspace import EnvironmentInfo
from switchyard.errors import GitError, InputError


def preview(info: EnvironmentInfo) -> dict[str, list[str]]:
    """What ``clean`` would remove (untracked, unrecoverable) and discard (tracked, saved as a stash entry)."""
    path = require_worktree(info)
    would = run_git(["clean", "-n", "-d"], cwd=path).splitlines()
    untracked = [line.removeprefix("Would remove ") for line in would if line.startswith("Would remove ")]
    tracked = [name for _, name in changed_files(cwd=path, untracked=False)]
    return {"untracked": untracked, "tracked": tracked}


def save_changes(path: Path, label: str) -> str | None:
    """Save uncommitted changes to tracked files as a stash entry (files are not touched); its sha, or None."""
    if not changed_files(cwd=path, untracked=False):
        return None
    sha = run_git(["stash", "create", label], cwd=path).strip()
    if sha:
        run_git(["stash", "store", "--quiet", "-m", label, sha], cwd=path)
    return sha or None


def _restore_hint(path: Path, stash: str | None) -> str:
    return f"; your uncommitted changes: git -C {path} stash apply {stash}" if stash else ""


def clean(workspace: Path, info: EnvironmentInfo) -> Outcome:
    path = require_worktree(info)
    with holding(env_lock(workspace, info.name)):
        found = preview(info)
        stash = save_changes(path, f"switchyard env clean {info.name}")
        run_git(["reset", "--hard", "--quiet", "HEAD"], cwd=path)
        run_git(["clean", "-f", "-d", "--quiet"], cwd=path)
    details = {**found, "stash": stash}
    message = f"removed {len(found['untracked'])} untracked path(s), discarded {len(found['tracked'])} change(s)"
    undo = "removed untracked files cannot be recovered" + (
        f"; discarded tracked changes: git -C {path} stash apply {stash}" if stash else ""
    )
    return Outcome(info.name, "clean", True, message, details, undo=undo)


def rebase(workspace: Path, info: EnvironmentInfo) -> Outcome:
    """Rebase the checked-out feature branch onto ``env/<env>``; a conflict aborts it and names the files."""
    path = require_worktree(info)
    branch = current_branch(cwd=path)
    if branch is None or branch == info.branch:
        where = branch or "a detached HEAD"
        message = f"the working copy is on {where}; rebase works on a feature branch (switchyard env feature)"
        return Outcome(info.name, "rebase", False, message)
    if changed_files(cwd=path, untracked=False):
        return Outcome(info.name, "rebase", False, "uncommitted changes; commit or clean them before rebasing")
    with holding(env_lock(workspace, info.name)):
        old = rev_parse("HEAD", cwd=path)
        if is_ancestor(info.branch, old, cwd=path):
            return Outcome(info.name, "rebase", True, f"{branch} already contains {info.branch}", {"sha": old})
        command = [*NO_SIGN, "rebase", "--quiet", "--no-autostash", info.branch]
        try:
            run_git(command, cwd=path, identity=user_identity(cwd=path))
        except GitError:
            return _abort_rebase(path, info, branch)
        new = rev_parse("HEAD", cwd=path)
    details = {"branch": branch, "from": old, "to": new}
    message = f"rebased {branch} onto {info.branch} ({old[:12]} -> {new[:12]})"
    return Outcome(info.name, "rebase", True, message, details, undo=f"git -C {path} reset --hard {old}")


def _abort_rebase(path: Path, info: EnvironmentInfo, branch: str) -> Outcome:
    conflicts = [n for n in run_git(["diff", "--name-only", "--diff-filter=U", "-z"], cwd=path).split("\0") if n]
    run_git(["rebase", "--abort"], cwd=path, check=False)
    message = (
        f"rebasing {branch} onto {info.branch} stopped on conflicts in {', '.join(conflicts) or 'some files'}; "
        "the rebase was aborted and the branch is as it was"
    )
    return Outcome(info.name, "rebase", False, message, {"branch": branch, "conflicts": conflicts})


def resolve_target(info: EnvironmentInfo, ref: str | None) -> str:
    """The commit ``reset`` moves to: ``ref`` (refused with InputError when it names none) or ``env/<env>``."""
    name = ref or info.branch
    if name.startswith("-"):
        raise InputError(f"--to {name!r} is not a ref; give a branch, tag or commit sha")
    try:
        return rev_parse(name, cwd=require_worktree(info))
    except GitError:
        raise InputError(f"--to {name!r} names no commit in {info.name}; give a branch, tag or commit sha") from None


def reset(workspace: Path, info: EnvironmentInfo, *, to: str | None = None) -> Outcome:
    """``reset --hard`` the checked-out branch to ``to`` (default ``env/<env>``), saving uncommitted changes."""
    path = require_worktree(info)
    with holding(env_lock(workspace, info.name)):
        target = resolve_target(info, to)
        old = rev_parse("HEAD", cwd=path)
        stash = save_changes(path, f"switchyard env reset {info.name}")
        run_git(["reset", "--hard", "--quiet", target], cwd=path)
    branch = current_branch(cwd=path)
    details = {"branch": branch, "from": old, "to": target, "stash": stash}
    message = f"reset {branch or 'HEAD'} to {to or info.branch} ({old[:12]} -> {target[:12]})"
    undo = f"git -C {path} reset --hard {old}" + _restore_hint(path, stash)
    return Outcome(info.name, "reset", True, message, details, undo=undo)
