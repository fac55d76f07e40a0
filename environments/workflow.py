"""The everyday git workflow on environments: the seed's eleven commands, adapted to the workspace layout.

Each environment's working copy (``<workspace>/<env>``) is a worktree of the shared bare ``.repo``, so its
branches *are* ``.repo``'s branches: a commit made there is on ``env/<env>`` in ``.repo`` at once, and the
pipeline sees it. The one remote is the source repository, ``origin`` of ``.repo``. So:

    status   branch, ahead/behind its base, uncommitted files. The base of ``env/<env>`` is ``origin/<base
             branch>`` (as last fetched); the base of any other branch (a feature) is ``env/<env>``
    feature  create and switch to ``feature/<env>/<YYYYMMDD>-<name>`` from ``env/<env>``
    commit   commit every change (refuses when there is none)
    log      the last N commits of the checked-out branch
    diff     what the working copy changes against its base (the same base as ``status``; from their merge
             base, so commits and uncommitted changes both show); ``uncommitted`` only against HEAD
    sync / push / pull       talk to origin: :mod:`environments.upstream`
    clean / rebase / reset   destructive, with an undo hint: :mod:`environments.rewrite`

Every command takes an environment and returns an :class:`Outcome` (data for ``--json``). Commands that
write hold the environment's lock (``.locks/<env>.lock``), the one merges into ``env/<env>`` take too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from environments.git import (
    NO_SIGN,
    ahead_behind,
    changed_files,
    check_branch_name,
    current_branch,
    ref_exists,
    rev_parse,
    run_git,
    user_identity,
)
from environments.layout import env_lock, holding, read_config, repo_dir, unknown_environment
from environments.workspace import EnvironmentInfo, list_environments
from switchyard.errors import GitError, InputError, NotFound

MAX_LOG = 1000
MAX_DIFF_CHARS = 200_000


@dataclass(frozen=True)
class Outcome:
    """What one command did in one environment. ``ok`` False: refused or failed, ``message`` says why."""

    environment: str
    command: str
    ok: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    undo: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "command": self.command,
            "ok": self.ok,
            "message": self.message,
            "undo": self.undo,
            **self.details,
        }


def select_environments(workspace: Path, names: list[str]) -> list[EnvironmentInfo]:
    """The named environments of the workspace, in the order given; every one of them when ``names`` is empty."""
    infos = list_environments(workspace)
    if not names:
        return infos
    by_name = {info.name: info for info in infos}
    for name in names:
        if name not in by_name:
            raise NotFound(unknown_environment(name, list(by_name)))
    return [by_name[name] for name in dict.fromkeys(names)]


def run_each(command: str, infos: list[EnvironmentInfo], action: Callable[[EnvironmentInfo], Outcome]) -> list[Outcome]:
    """Run ``action`` on each environment; a git failure in one is its outcome, and the others still run."""
    outcomes = []
    for info in infos:
        try:
            outcomes.append(action(info))
        except (GitError, InputError) as exc:
            outcomes.append(Outcome(info.name, command, False, str(exc)))
    return outcomes


def require_worktree(info: EnvironmentInfo) -> Path:
    if not (info.path / ".git").exists():
        raise GitError(f"the working copy {info.path} is missing; run `switchyard env init` to repair it")
    return info.path


def short(ref: str) -> str:
    return ref.removeprefix("refs/heads/").removeprefix("refs/remotes/")


def upstream_ref(workspace: Path, branch: str) -> str:
    """``origin/<branch>`` as last fetched; the clone's own copy of it before the first fetch."""
    remote = f"refs/remotes/origin/{branch}"
    return remote if ref_exists(remote, cwd=repo_dir(workspace)) else f"refs/heads/{branch}"


def base_of(workspace: Path, info: EnvironmentInfo, branch: str | None) -> str:
    """What ``branch`` is compared with: origin's base branch for ``env/<env>``, ``env/<env>`` for the rest."""
    if branch == info.branch:
        return upstream_ref(workspace, read_config(workspace).base_branch)
    return f"refs/heads/{info.branch}"


def status(workspace: Path, info: EnvironmentInfo) -> Outcome:
    path = require_worktree(info)
    branch = current_branch(cwd=path)
    base = base_of(workspace, info, branch)
    ahead, behind = ahead_behind("HEAD", base, cwd=path)
    dirty = [{"status": code, "path": name} for code, name in changed_files(cwd=path)]
    state = f"{len(dirty)} uncommitted file(s)" if dirty else "clean"
    details = {
        "branch": branch,
        "head": rev_parse("HEAD", cwd=path)[:12],
        "base": short(base),
        "ahead": ahead,
        "behind": behind,
        "dirty": dirty,
    }
    message = f"{branch or 'detached HEAD'}: {ahead} ahead, {behind} behind {short(base)}; {state}"
    return Outcome(info.name, "status", True, message, details)


def check_count(count: int) -> int:
    if not 1 <= count <= MAX_LOG:
        raise InputError(f"-n must be between 1 and {MAX_LOG}, got {count}")
    return count


def log(workspace: Path, info: EnvironmentInfo, *, count: int) -> Outcome:
    path = require_worktree(info)
    check_count(count)
    out = run_git(["log", f"-n{count}", "--format=%H%x1f%an%x1f%aI%x1f%s%x1e", "HEAD"], cwd=path)
    keys = ("sha", "author", "date", "subject")
    commits = [dict(zip(keys, record.strip("\n").split("\x1f"), strict=True)) for record in out.split("\x1e")[:-1]]
    branch = current_branch(cwd=path)
    details = {"branch": branch, "commits": commits}
    return Outcome(info.name, "log", True, f"{len(commits)} commit(s) on {branch or 'detached HEAD'}", details)


def diff(workspace: Path, info: EnvironmentInfo, *, stat: bool, uncommitted: bool = False) -> Outcome:
    """The working copy's changes against its base (see :func:`base_of`): every commit since the branch left
    it and every uncommitted change; with ``uncommitted``, only what is not committed (against HEAD)."""
    path = require_worktree(info)
    if uncommitted:
        since, against = "HEAD", "HEAD"
    else:
        base = base_of(workspace, info, current_branch(cwd=path))
        since, against = run_git(["merge-base", base, "HEAD"], cwd=path).strip(), short(base)
    files = []
    for line in run_git(["diff", since, "--numstat"], cwd=path).splitlines():
        added, removed, name = line.split("\t", 2)
        files.append({"path": name, "added": _count(added), "removed": _count(removed)})
    untracked = [name for code, name in changed_files(cwd=path) if code == "??"]
    text = run_git(["diff", since, "--stat" if stat else "--patch"], cwd=path)
    if len(text) > MAX_DIFF_CHARS:
        text = text[:MAX_DIFF_CHARS] + f"\n[... {len(text) - MAX_DIFF_CHARS} more characters not shown ...]\n"
    commits = 0 if uncommitted else ahead_behind("HEAD", since, cwd=path)[0]
    what = (
        "uncommitted" if uncommitted else f"against {against} ({commits} commit(s) since {since[:12]}, and uncommitted)"
    )
    message = f"{len(files)} changed file(s) {what}, {len(untracked)} untracked"
    details = {
        "files": files,
        "untracked": untracked,
        "text": text,
        "base": against,
        "since": since,
        "commits": commits,
    }
    return Outcome(info.name, "diff", True, message, details)


def _count(value: str) -> int | None:
    return None if value == "-" else int(value)  # "-": a binary file


def feature_branch_name(environment: str, name: str, today: date) -> str:
    """``feature/<env>/<YYYYMMDD>-<name>``, after git's own check of the whole branch name.

    The environment is part of the name because every working copy shares ``.repo``'s branches, and a
    branch can be checked out in one working copy only: ``feature --all x`` gives each its own branch.
    """
    if not name or "/" in name:
        raise InputError(f"feature name {name!r} must be a non-empty name without '/', e.g. login-form")
    return check_branch_name(f"feature/{environment}/{today:%Y%m%d}-{name}")


def feature(workspace: Path, info: EnvironmentInfo, *, name: str, today: date) -> Outcome:
    """Create the dated feature branch at ``env/<env>`` and switch the working copy to it."""
    path = require_worktree(info)
    branch = feature_branch_name(info.name, name, today)
    if ref_exists(f"refs/heads/{branch}", cwd=path):
        return Outcome(info.name, "feature", False, f"branch {branch} already exists; switch to it with git switch")
    with holding(env_lock(workspace, info.name)):
        start = rev_parse(info.branch, cwd=path)
        run_git(["switch", "--quiet", "--no-track", "-c", branch, start], cwd=path)
    details = {"branch": branch, "start": start[:12]}
    return Outcome(info.name, "feature", True, f"switched to new branch {branch} at {info.branch}", details)


def commit(workspace: Path, info: EnvironmentInfo, *, message: str) -> Outcome:
    """Stage every change (new, modified, deleted) and commit it as the user git is configured for."""
    if not message.strip():
        raise InputError("the commit message is empty; pass -m 'what changed'")
    path = require_worktree(info)
    with holding(env_lock(workspace, info.name)):
        run_git(["add", "--all"], cwd=path)
        staged = [name for name in run_git(["diff", "--cached", "--name-only", "-z"], cwd=path).split("\0") if name]
        if not staged:
            return Outcome(info.name, "commit", False, "nothing to commit: the working copy has no changes")
        run_git([*NO_SIGN, "commit", "--quiet", "-m", message], cwd=path, identity=user_identity(cwd=path))
        sha = rev_parse("HEAD", cwd=path)
    branch = current_branch(cwd=path)
    details = {"branch": branch, "sha": sha, "files": staged}
    return Outcome(info.name, "commit", True, f"committed {len(staged)} file(s) on {branch} as {sha[:12]}", details)
