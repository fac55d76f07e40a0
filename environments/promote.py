"""Promotion: move a stage's work to the next stage (dev → qa → staging) once the checks pass on it.

The commit promoted is the source stage's tip when the promotion starts: the environment's check command
(from its SQL row) runs on exactly that commit, in a temporary detached worktree under ``.promote/``
(removed afterwards, whatever happens), and the target stage branch is then fast-forwarded to it. Work
that lands on the source meanwhile waits for the next promotion. The target only ever fast-forwards: when
it has commits the source lacks, the promotion is refused and names them. The update itself is a
compare-and-swap under the environment's lock, so a concurrent promotion cannot be overwritten.

Every outcome, refusals included, is recorded as a row of ``promotions``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from environments.checks import CheckResult, run_check
from environments.git import ahead_behind, is_ancestor, rev_parse, run_git
from environments.layout import env_lock, holding, promote_dir, read_config, repo_dir, repo_lock, stage_branch
from environments.workspace import environment_info
from environments.worktrees import worktree_git
from store.db import session_scope
from store.models import Environment, Promotion
from switchyard.errors import InputError, NotFound

CHECK_TIMEOUT_S = 900.0
Checker = Callable[[Path], CheckResult]  # runs the check command in the directory given


@dataclass(frozen=True)
class PromotionResult:
    """``status``: promoted, up_to_date, check_failed or not_fast_forward; ``reason`` says why in a sentence."""

    environment: str
    from_stage: str
    to_stage: str
    source_branch: str
    target_branch: str
    status: str
    source_sha: str
    target_before: str
    target_after: str
    reason: str
    check: CheckResult | None = None

    @property
    def ok(self) -> bool:
        return self.status in {"promoted", "up_to_date"}

    def as_dict(self) -> dict[str, Any]:
        fields = {key: value for key, value in vars(self).items() if key != "check"}
        return {**fields, "ok": self.ok, "check": self.check.as_dict() if self.check else None}


def source_stage(stages: list[str], to_stage: str) -> str:
    """The stage before ``to_stage``; InputError naming the stages that can be promoted to."""
    targets = stages[1:]
    if to_stage not in targets:
        raise InputError(f"cannot promote to {to_stage!r}; --to must be one of: {', '.join(targets) or 'none'}")
    return stages[stages.index(to_stage) - 1]


def promote(
    workspace: Path,
    environment: str,
    to_stage: str,
    *,
    database_url: str,
    check_timeout_s: float = CHECK_TIMEOUT_S,
) -> PromotionResult:
    """Promote ``environment``'s work to ``to_stage`` if its check passes, and record the outcome."""
    workspace = workspace.resolve()
    environment_info(workspace, environment)
    from_stage = source_stage(read_config(workspace).stages, to_stage)
    command = _check_command(database_url, environment)
    checker = partial(run_check, command=command, timeout_s=check_timeout_s)
    result = decide(workspace, environment, from_stage=from_stage, to_stage=to_stage, command=command, check=checker)
    _record(database_url, result)
    return result


def decide(
    workspace: Path, environment: str, *, from_stage: str, to_stage: str, command: str, check: Checker
) -> PromotionResult:
    """Check the source's tip and fast-forward the target to it; no SQL (the caller records the result)."""
    repo = repo_dir(workspace)
    source, target = stage_branch(environment, from_stage), stage_branch(environment, to_stage)
    sha, before = rev_parse(source, cwd=repo), rev_parse(target, cwd=repo)

    def outcome(status: str, reason: str, after: str = before, ran: CheckResult | None = None) -> PromotionResult:
        return PromotionResult(
            environment, from_stage, to_stage, source, target, status, sha, before, after, reason, ran
        )

    if sha == before or is_ancestor(sha, before, cwd=repo):
        return outcome("up_to_date", f"{target} already contains {source} ({sha[:12]}); nothing to promote")
    if not is_ancestor(before, sha, cwd=repo):
        return outcome("not_fast_forward", _diverged(repo, source, target, before, sha))
    ran = _check_in_worktree(workspace, f"{environment}-{to_stage}", sha, check)
    if not ran.passed:
        code = "did not finish" if ran.exit_code is None else f"exit code {ran.exit_code}"
        return outcome("check_failed", f"check `{command}` failed on {source} at {sha[:12]} ({code})", ran=ran)
    with holding(env_lock(workspace, environment)):
        now = rev_parse(target, cwd=repo)
        if not is_ancestor(now, sha, cwd=repo):  # someone moved the target while the check ran
            return outcome("not_fast_forward", _diverged(repo, source, target, now, sha), after=now, ran=ran)
        note = f"switchyard promote {source} -> {target}"
        run_git(["update-ref", "-m", note, f"refs/heads/{target}", sha, now], cwd=repo)
    count = ahead_behind(sha, before, cwd=repo)[0]
    passed = f"check `{command}` passed on {source} at {sha[:12]} in {ran.duration_s:.1f}s"
    return outcome(
        "promoted", f"{passed}; fast-forwarded {target} by {count} commit(s) to {sha[:12]}", after=sha, ran=ran
    )


def _diverged(repo: Path, source: str, target: str, target_sha: str, source_sha: str) -> str:
    extra, _ = ahead_behind(target_sha, source_sha, cwd=repo)
    first = run_git(["log", "-n3", "--format=%h %s", target_sha, f"^{source_sha}"], cwd=repo).strip()
    return (
        f"not a fast-forward: {target} has {extra} commit(s) that {source} does not ({'; '.join(first.splitlines())}); "
        f"a promotion only fast-forwards, so bring those commits into {source} first or reset {target}"
    )


def check_at(workspace: Path, ref: str, command: str, *, timeout_s: float = CHECK_TIMEOUT_S) -> CheckResult:
    """Run ``command`` on ``ref``'s commit in a temporary worktree, as a promotion would (``env init``'s run)."""
    workspace = workspace.resolve()
    sha = rev_parse(ref, cwd=repo_dir(workspace))
    label = ref.replace("/", "-")
    return _check_in_worktree(workspace, label, sha, partial(run_check, command=command, timeout_s=timeout_s))


def _check_in_worktree(workspace: Path, label: str, sha: str, check: Checker) -> CheckResult:
    """Run the check in a temporary detached worktree at ``sha``; the worktree is removed afterwards."""
    repo = repo_dir(workspace)
    promote_dir(workspace).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=promote_dir(workspace)))
    try:
        worktree_git(repo, ["add", "--quiet", "--detach", str(path), sha])
        return check(path)
    finally:
        with holding(repo_lock(workspace)):
            worktree_git(repo, ["remove", "--force", str(path)], check=False)
            if path.exists():  # remove failed: delete the directory, then forget the worktree
                shutil.rmtree(path, ignore_errors=True)
                worktree_git(repo, ["prune"], check=False)


def _check_command(database_url: str, environment: str) -> str:
    with session_scope(database_url) as session:
        row = session.get(Environment, environment)
        if row is None:
            raise NotFound(f"environment {environment!r} is not recorded in the database; run: switchyard env init")
        return row.check_command


def _record(database_url: str, result: PromotionResult) -> None:
    with session_scope(database_url) as session:
        session.add(
            Promotion(
                environment=result.environment,
                from_stage=result.from_stage,
                to_stage=result.to_stage,
                status=result.status,
                source_sha=result.source_sha,
                target_before=result.target_before,
                target_after=result.target_after,
                check=result.check.as_dict() if result.check else {},
                reason=result.reason,
            )
        )
