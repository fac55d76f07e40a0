"""Merging work into an environment's branches, one merge at a time per environment, and reviewing it first.

A merge never happens on the target branch itself. Holding ``.locks/<env>.lock``, the branch is merged into a
detached worktree at the target's tip (``.tasks/<task id>``); a conflict may be resolved there, the check
command runs on the merged tree, and only when it passes is the target moved, in one step:
``git update-ref <target> <merge> <old tip>``, which refuses if anything moved it meanwhile. So the target
points at its old tip or at a complete, checked merge, never at anything in between, also when the process
is killed. The worktree that has the target checked out (the environment's own) is then brought to the new
tip; it must have no uncommitted changes to tracked files, or nothing is merged.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from environments.checks import CheckResult
from environments.git import END_OF_OPTIONS, NO_SIGN, branch_exists, check_branch_name, is_ancestor, rev_parse, run_git
from environments.layout import env_branch, env_lock, holding, repo_dir, require_environment
from environments.worktrees import detached_worktree, remove_task_worktree, worktree_of
from switchyard.errors import CheckFailed, GitError, InputError, MergeConflict

__all__ = ["Conflict", "MergeInfo", "env_lock", "integrate", "merge_into_environment", "review_diff"]

TRUNCATED = "\n[... diff truncated: {shown} of {total} characters shown ...]\n"
MARKERS = ("<<<<<<< ", ">>>>>>> ")
Resolver = Callable[["Conflict"], dict[str, str]]
Checker = Callable[[Path], CheckResult]


@dataclass(frozen=True)
class MergeInfo:
    """The merge commit (or the unchanged tip, when ``already_merged``) and the files it brought in."""

    sha: str
    files: list[str]
    already_merged: bool
    base: str = ""
    conflicts: list[str] = field(default_factory=list)  # resolved conflicts, when there were any
    check: CheckResult | None = None


@dataclass(frozen=True)
class Conflict:
    """A merge stopped on ``files``; ``texts`` holds each one as the worktree has it, conflict markers and all."""

    branch: str
    target: str
    files: list[str]
    texts: dict[str, str]


def integrate(
    workspace: Path,
    environment: str,
    branch: str,
    *,
    work_id: str,
    message: str,
    target: str | None = None,
    check: Checker | None = None,
    resolve: Resolver | None = None,
    before_move: Callable[[str, str], None] = lambda old, new: None,
) -> MergeInfo:
    """Merge ``branch`` into ``target`` (default ``env/<environment>``) with ``--no-ff``, as described above.

    ``resolve`` gets one :class:`Conflict` and returns the resolved contents of its files (raise
    MergeConflict to give up); without it a conflict raises MergeConflict. ``check`` runs in the merged tree;
    a failure raises CheckFailed. ``before_move(old, new)`` is called just before the target moves (a journal).
    The worktree is removed after success and kept after a failure, for inspection.
    """
    require_environment(workspace, environment)
    _require_branch(workspace, branch)
    target = target or env_branch(environment)
    with holding(env_lock(workspace, environment)):
        checkout = worktree_of(workspace, target)
        if checkout is not None:
            _require_clean(checkout, target)
        old = rev_parse(target, cwd=repo_dir(workspace))
        if is_ancestor(branch, old, cwd=repo_dir(workspace)):
            return MergeInfo(sha=old, files=[], already_merged=True, base=old)
        worktree = detached_worktree(workspace, work_id, old)
        conflicts = _merge(worktree, branch, target, message, resolve)
        new = rev_parse("HEAD", cwd=worktree)
        result = check(worktree) if check is not None else None
        if result is not None and not result.passed:
            raise CheckFailed(_check_message(result, branch, target), output=result.output)
        before_move(old, new)
        advance(workspace, target, old, new)
        remove_task_worktree(workspace, work_id)
    files = run_git(["diff", "--name-only", "-z", old, new], cwd=repo_dir(workspace)).split("\0")
    return MergeInfo(new, [f for f in files if f], False, base=old, conflicts=conflicts, check=result)


def merge_into_environment(workspace: Path, environment: str, branch: str, *, message: str) -> MergeInfo:
    """Merge ``branch`` into ``env/<environment>`` without a check; a conflict raises MergeConflict."""
    work_id = f"merge-{uuid.uuid4().hex[:12]}"
    try:
        return integrate(workspace, environment, branch, work_id=work_id, message=message)
    finally:
        remove_task_worktree(workspace, work_id)


def advance(workspace: Path, target: str, old: str, new: str) -> None:
    """Move ``target`` from ``old`` to ``new`` (refused if it is not at ``old`` any more, unless it is at
    ``new`` already), then bring the worktree that has it checked out to ``new``. Call with the env lock."""
    repo = repo_dir(workspace)
    if rev_parse(target, cwd=repo) != new:
        run_git(["update-ref", "-m", f"switchyard: merge into {target}", f"refs/heads/{target}", new, old], cwd=repo)
    checkout = worktree_of(workspace, target)
    if checkout is not None:  # verified clean before the merge, so this only brings in the merge's files
        run_git(["reset", "--hard", "--quiet", new], cwd=checkout)


def _merge(worktree: Path, branch: str, target: str, message: str, resolve: Resolver | None) -> list[str]:
    """Merge ``branch`` into the worktree's HEAD; a conflict is resolved with ``resolve`` or raised."""
    command = [*NO_SIGN, "-c", "merge.conflictStyle=merge", "merge", "--no-ff", "--no-verify", "-q", "-m", message]
    try:
        run_git([*command, END_OF_OPTIONS, branch], cwd=worktree)
        return []
    except GitError as exc:
        files = _unmerged(worktree)
        if not files:
            raise
        conflict = Conflict(branch, target, files, {name: _read(worktree / name) for name in files})
        if resolve is None:
            raise MergeConflict(_conflict_message(branch, target, files), files=files, command=exc.command) from None
    _write_resolution(worktree, conflict, resolve(conflict), message)
    return files


def _write_resolution(worktree: Path, conflict: Conflict, contents: dict[str, str], message: str) -> None:
    missing = [name for name in conflict.files if name not in contents]
    marked = [name for name in conflict.files if name in contents and _has_markers(contents[name])]
    if missing or marked:
        what = "leaves out" if missing else "still has conflict markers in"
        raise MergeConflict(
            f"{_conflict_message(conflict.branch, conflict.target, conflict.files)}; the resolution {what} "
            f"{', '.join(missing or marked)}",
            files=conflict.files,
        )
    for name in conflict.files:
        (worktree / name).write_text(contents[name], encoding="utf-8")
    run_git(["add", "--", *conflict.files], cwd=worktree)
    run_git([*NO_SIGN, "commit", "--no-verify", "-q", "-m", message], cwd=worktree)


def _has_markers(text: str) -> bool:
    return any(line.startswith(MARKERS) for line in text.splitlines())


def _unmerged(worktree: Path) -> list[str]:
    out = run_git(["diff", "--name-only", "--diff-filter=U", "-z"], cwd=worktree)
    return [name for name in out.split("\0") if name]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""  # deleted on one side


def _conflict_message(branch: str, target: str, files: list[str]) -> str:
    return f"merging {branch} into {target} conflicts in {', '.join(files)}; {target} was left unchanged"


def _check_message(result: CheckResult, branch: str, target: str) -> str:
    tail = result.output.strip().splitlines()[-5:]
    status = f"exit {result.exit_code}" if result.exit_code is not None else "did not finish"
    return (
        f"the check {result.command!r} failed on {branch} merged into {target} ({status}); {target} was left "
        "unchanged. Last lines: " + " | ".join(tail)
    )


def _require_branch(workspace: Path, branch: str) -> None:
    check_branch_name(branch)
    if not branch_exists(branch, cwd=repo_dir(workspace)):
        raise InputError(f"branch {branch!r} does not exist in the workspace repository")


def _require_clean(checkout: Path, target: str) -> None:
    """The worktree that has ``target`` checked out has no uncommitted changes to tracked files."""
    if run_git(["status", "--porcelain", "--untracked-files=no"], cwd=checkout).strip():
        raise GitError(f"{checkout} (on {target}) has uncommitted changes; commit or discard them before merging")


def bring_in(worktree: Path, branches: list[str], *, message: str) -> list[str]:
    """Merge each of ``branches`` that HEAD does not contain yet into the worktree's branch (a task that
    depends on several others starts from all their work); a conflict is aborted and raised."""
    merged = []
    for branch in branches:
        if is_ancestor(branch, "HEAD", cwd=worktree):
            continue
        try:
            merge = [*NO_SIGN, "merge", "--no-ff", "--no-verify", "-q", "-m", f"{message}: {branch}", END_OF_OPTIONS]
            run_git([*merge, branch], cwd=worktree)
        except GitError as exc:
            files = _unmerged(worktree)
            run_git(["merge", "--abort"], cwd=worktree, check=False)
            if not files:
                raise
            raise MergeConflict(
                f"the branches this task builds on conflict: merging {branch} conflicts in {', '.join(files)}",
                files=files,
                command=exc.command,
            ) from None
        merged.append(branch)
    return merged


def review_diff(workspace: Path, environment: str, branch: str, *, max_chars: int) -> str:
    """``git diff env/<env>...<branch>``: what ``branch`` would bring, cut to ``max_chars`` with a marker."""
    require_environment(workspace, environment)
    _require_branch(workspace, branch)
    span = f"{env_branch(environment)}...{branch}"
    diff = run_git(["diff", "--no-color", "--no-ext-diff", span], cwd=repo_dir(workspace))
    return truncate(diff, max_chars)


def truncate(text: str, max_chars: int) -> str:
    """``text`` if it fits, else its start (cut at a line end) plus a marker, within ``max_chars`` in all."""
    if len(text) <= max_chars:
        return text
    marker_room = len(TRUNCATED.format(shown=max_chars, total=len(text)))
    keep = text[: max(max_chars - marker_room, 0)]
    keep = keep[: keep.rfind("\n") + 1] or keep
    return keep + TRUNCATED.format(shown=len(keep), total=len(text))
