"""Merging work into an environment's branch, one merge at a time per environment, and reviewing it first.

A merge runs in the environment's own worktree (``<workspace>/<env>``, on ``env/<env>``) while holding
``.locks/<env>.lock``. A conflict is aborted before it is reported, so the environment's branch, index and
files are exactly as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from environments.git import (
    NO_SIGN,
    branch_exists,
    check_branch_name,
    current_branch,
    is_ancestor,
    rev_parse,
    run_git,
)
from environments.layout import env_branch, env_lock, holding, repo_dir, require_environment
from switchyard.errors import GitError, InputError, MergeConflict

__all__ = ["MergeInfo", "env_lock", "merge_into_environment", "review_diff"]

TRUNCATED = "\n[... diff truncated: {shown} of {total} characters shown ...]\n"


@dataclass(frozen=True)
class MergeInfo:
    """The merge commit (or the unchanged tip, when ``already_merged``) and the files it brought in."""

    sha: str
    files: list[str]
    already_merged: bool


def merge_into_environment(workspace: Path, environment: str, branch: str, *, message: str) -> MergeInfo:
    """Merge ``branch`` into ``env/<environment>`` with ``--no-ff``; a conflict raises MergeConflict."""
    require_environment(workspace, environment)
    _require_branch(workspace, branch)
    worktree = workspace / environment
    with holding(env_lock(workspace, environment)):
        _require_ready(worktree, environment)
        before = rev_parse("HEAD", cwd=worktree)
        if is_ancestor(branch, before, cwd=worktree):
            return MergeInfo(sha=before, files=[], already_merged=True)
        command = [*NO_SIGN, "merge", "--no-ff", "--no-verify", "--quiet", "-m", message, branch]
        try:
            run_git(command, cwd=worktree)
        except GitError as exc:
            _undo_merge(worktree, before, branch, exc)
        after = rev_parse("HEAD", cwd=worktree)
        files = run_git(["diff", "--name-only", "-z", before, after], cwd=worktree).split("\0")
        return MergeInfo(sha=after, files=[f for f in files if f], already_merged=False)


def _require_branch(workspace: Path, branch: str) -> None:
    check_branch_name(branch)
    if not branch_exists(branch, cwd=repo_dir(workspace)):
        raise InputError(f"branch {branch!r} does not exist in the workspace repository")


def _require_ready(worktree: Path, environment: str) -> None:
    """The environment's worktree is on its branch and has no uncommitted changes to tracked files."""
    expected = env_branch(environment)
    if not (worktree / ".git").exists():
        raise GitError(f"{worktree} is missing; run init again to repair the workspace")
    if current_branch(cwd=worktree) != expected:
        raise GitError(f"{worktree} is not on {expected}; check it out again before merging")
    if run_git(["status", "--porcelain", "--untracked-files=no"], cwd=worktree).strip():
        raise GitError(f"{worktree} has uncommitted changes; commit or discard them before merging")


def _undo_merge(worktree: Path, before: str, branch: str, exc: GitError) -> None:
    """Abort the failed merge, put the branch back at ``before``, then raise MergeConflict or the GitError."""
    conflicts = run_git(["diff", "--name-only", "--diff-filter=U", "-z"], cwd=worktree).split("\0")
    conflicts = [name for name in conflicts if name]
    run_git(["merge", "--abort"], cwd=worktree, check=False)
    run_git(["reset", "--hard", "--quiet", before], cwd=worktree)
    if conflicts:
        raise MergeConflict(
            f"merging {branch} conflicts in {', '.join(conflicts)}; the environment was left unchanged",
            files=conflicts,
            command=exc.command,
        ) from None
    raise exc


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
