"""``pr_integ``: merge an approved branch into the environment's branch, through a merge queue per environment.

The queue is the gate: an integration waits while an earlier one (by submission) for the same environment and
stage has not finished. The provider writes the merge commit message (or holds the merge); the merge itself is
:func:`environments.merge.integrate`: a temporary worktree, the check command on the merged tree, and the
branch moved only when the check passes. On a conflict the provider that implemented the branch gets one try
to resolve it (full contents of the conflicted files, or in-place edits through an agent CLI); if it cannot,
or the check fails, the task fails naming the files or the check's output, and the branch is left as it was.
Every outcome is recorded in the ``merges`` table; a ``merging`` row is the journal a redelivered task
finishes from when its worker died while the branch was being moved, and a ``merged`` row is reported as it
is. Once merged, a ``task/*`` branch is deleted unless another task still needs it (:mod:`environments.branches`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from environments.branches import sweep_task_branches
from environments.checks import CheckResult, run_check
from environments.git import run_git
from environments.layout import env_lock, holding, tasks_dir
from environments.merge import Conflict, MergeInfo, advance, integrate
from store import pipeline as rows
from store import repo
from store.db import session_scope
from store.models import Environment, Merge
from switchyard.errors import CheckFailed, GitError, MergeConflict, ProviderError
from tasks.context import Context
from tasks.kinds.base import (
    Answer,
    Assist,
    BaseHandler,
    Outcome,
    Prompt,
    TaskInfo,
    header,
    parse_json_answer,
    system_prompt,
)

INSTRUCTIONS = """
Decide whether the branch below should be merged and write its merge commit message. Answer with one JSON
object and nothing else: {"decision": "merge" | "hold", "commit_message": "<message>", "reason": "<why>"}
"""
DONE = ("merged", "already_merged")  # journal states a redelivered task reports instead of merging again
RESOLVE_KIND = "resolve_conflict"
log = logging.getLogger(__name__)
RESOLVE_INSTRUCTIONS = """
Merging the branch below conflicts. Each conflicted file follows between "=== BEGIN FILE <path> ===" and
"=== END FILE <path> ===" lines, with git's conflict markers. Resolve every conflict keeping the intent of
both sides. Answer with one JSON object and nothing else, holding the full resolved contents of every file:
{"files": [{"path": "<path>", "content": "<the whole file, without conflict markers>"}]}
"""


class Decision(BaseModel):
    decision: Literal["merge", "hold"]
    commit_message: str = Field(min_length=1, max_length=2000)
    reason: str = ""


class ResolvedFile(BaseModel):
    path: str = Field(min_length=1)
    content: str


class Resolution(BaseModel):
    files: list[ResolvedFile]


def conflict_prompt(task: TaskInfo, conflict: Conflict) -> Prompt:
    body = header(task, branch=conflict.branch, title=task.request.title)
    parts = [f"{body}\nTarget: {conflict.target}\nConflicted files: {', '.join(conflict.files)}\n"]
    for name in conflict.files:
        parts.append(f"=== BEGIN FILE {name} ===\n{conflict.texts[name]}\n=== END FILE {name} ===\n")
    system = system_prompt(RESOLVE_KIND, "a software engineer resolving a merge conflict", RESOLVE_INSTRUCTIONS)
    return Prompt(system, "\n".join(parts))


@dataclass(frozen=True)
class ConflictResolver:
    """The implementing provider's one try at a conflict: the resolved contents of every conflicted file."""

    task: TaskInfo
    provider: str
    assist: Assist

    def __call__(self, conflict: Conflict) -> dict[str, str]:
        failed = f"merging {conflict.branch} conflicts in {', '.join(conflict.files)}; {self.provider} "
        try:
            reply = self.assist.ask(self.provider, conflict_prompt(self.task, conflict))
            if reply.transport == "cli" and reply.workdir is not None:  # the agent edited the merge's worktree
                return {name: (reply.workdir / name).read_text(encoding="utf-8") for name in conflict.files}
            resolution = parse_json_answer(reply.text, Resolution)
        except (ProviderError, OSError) as exc:
            raise MergeConflict(f"{failed}could not resolve it: {exc}", files=conflict.files) from None
        return {item.path: item.content for item in resolution.files}


class IntegrateHandler(BaseHandler):
    kind = "pr_integ"

    def gate(self, ctx: Context, task: TaskInfo) -> str | None:
        with session_scope(ctx.database_url) as session:
            row = repo.get_task(session, task.id)
            ahead = rows.integrations_ahead(session, task=row) if row is not None else []
            names = [f"{t.id[:8]} ({t.status})" for t in ahead]
        if not names:
            return None
        return f"waiting in the merge queue of {task.environment}/{task.stage} behind {', '.join(names)}"

    def workdir(self, ctx: Context, task: TaskInfo) -> Path | None:
        """An agent CLI asked to resolve a conflict edits the merge's worktree in place."""
        path = tasks_dir(task.workspace) / task.id
        return path if path.is_dir() else None

    def prompt(self, ctx: Context, task: TaskInfo) -> Prompt:
        branch = task.request.branch or ""
        stat = run_git(["diff", "--stat", f"{task.stage_branch}...{branch}"], cwd=task.workspace / ".repo")
        body = header(task, branch=branch, title=task.request.title)
        prompt = f"{body}\nTarget: {task.stage_branch}\n\nChanges:\n{stat}"
        return Prompt(system_prompt(self.kind, "an integration engineer", INSTRUCTIONS), prompt)

    def act(self, ctx: Context, task: TaskInfo, answer: Answer, assist: Assist) -> Outcome:
        decision = parse_json_answer(answer.text, Decision)
        record = self._recorder(ctx, task)
        if decision.decision == "hold":
            record("held")
            reason = decision.reason or "no reason given"
            return Outcome(f"held by {answer.provider}: {reason}", {"branch": task.request.branch}, "failed")
        with session_scope(ctx.database_url) as session:
            journal = rows.merge_of(session, task.id)
            env = session.get(Environment, task.environment)
            command = env.check_command if env else "true"
            implementer = task.request.implementer or rows.branch_author(
                session, environment=task.environment, branch=task.request.branch or ""
            )
        if journal is not None and journal.status == "merging" and journal.base_sha and journal.merge_sha:
            return self._finish_move(ctx, task, journal, record)
        if journal is not None and journal.status in DONE and journal.base_sha and journal.merge_sha:
            done = journal.status == "already_merged"  # a redelivery after the merge (its branch may be gone)
            return self._replayed(task, journal.base_sha, journal.merge_sha, done, journal.check)
        timeout = ctx.fleet.kind(self.kind).check_timeout_s
        resolve = ConflictResolver(task, implementer, assist) if implementer else None
        return self._merge(
            ctx, task, decision.commit_message, command=command, timeout=timeout, resolve=resolve, record=record
        )

    def _merge(
        self,
        ctx: Context,
        task: TaskInfo,
        message: str,
        *,
        command: str,
        timeout: float,
        resolve: ConflictResolver | None,
        record: Callable[..., None],
    ) -> Outcome:
        checked: list[CheckResult] = []

        def check(worktree: Path) -> CheckResult:
            checked.append(run_check(worktree, command, timeout_s=timeout))
            return checked[-1]

        try:
            info = integrate(
                task.workspace,
                task.environment,
                task.request.branch or "",
                work_id=task.id,
                message=message,
                target=task.stage_branch,
                check=check,
                resolve=resolve,
                before_move=lambda old, new: record(
                    "merging", base_sha=old, merge_sha=new, check=checked[-1].as_dict() if checked else None
                ),
            )
        except MergeConflict as exc:
            record("conflict", conflict_files=exc.files, resolved_by=resolve.provider if resolve else None)
            raise
        except CheckFailed:
            record("check_failed", check=checked[-1].as_dict() if checked else None)
            raise
        status = "already_merged" if info.already_merged else "merged"
        check_row = info.check.as_dict() if info.check else None
        resolved_by = resolve.provider if resolve and info.conflicts else None
        record(
            status,
            base_sha=info.base,
            merge_sha=info.sha,
            conflict_files=info.conflicts,
            resolved_by=resolved_by,
            check=check_row,
        )
        self._drop_branch(ctx, task)  # after the journal says merged: a redelivery never merges a branch that is gone
        return self._outcome(task, info, resolved_by, check_row)

    def _finish_move(self, ctx: Context, task: TaskInfo, journal: Merge, record: Callable[..., None]) -> Outcome:
        """A worker died after the merge was checked, while the branch was being moved: finish moving it."""
        old, new, check = journal.base_sha or "", journal.merge_sha or "", journal.check
        with holding(env_lock(task.workspace, task.environment)):
            advance(task.workspace, task.stage_branch, old, new)
        record("merged", base_sha=old, merge_sha=new, check=check or None)
        self._drop_branch(ctx, task)
        return self._replayed(task, old, new, False, check)

    def _replayed(self, task: TaskInfo, old: str, new: str, already: bool, check: dict[str, Any]) -> Outcome:
        files = run_git(["diff", "--name-only", old, new], cwd=task.workspace / ".repo").split()
        return self._outcome(task, MergeInfo(new, files, already, base=old), None, check or None)

    def _drop_branch(self, ctx: Context, task: TaskInfo) -> None:
        """The merged ``task/*`` branch goes unless another task still needs it; a failure here fails nothing."""
        try:
            swept = sweep_task_branches(
                task.workspace, database_url=ctx.database_url, branches=[task.request.branch or ""], exclude={task.id}
            )
        except (GitError, SQLAlchemyError) as exc:  # the merge stands; a later sweep (env clean-tasks) deletes it
            log.warning("task %s: the merged branch %s was kept: %s", task.id, task.request.branch, exc)
            return
        for branch, why in swept.kept.items():
            log.info("task %s: branch %s kept: %s", task.id, branch, why)

    def _recorder(self, ctx: Context, task: TaskInfo) -> Callable[..., None]:
        def record(status: str, **fields: Any) -> None:
            with session_scope(ctx.database_url) as session:
                rows.record_merge(
                    session,
                    task_id=task.id,
                    environment=task.environment,
                    stage=task.stage,
                    branch=task.request.branch or "",
                    target=task.stage_branch,
                    status=status,
                    **fields,
                )

        return record

    def _outcome(
        self, task: TaskInfo, info: MergeInfo, resolved_by: str | None, check: dict[str, Any] | None
    ) -> Outcome:
        branch = task.request.branch or ""
        data = {
            "branch": branch,
            "target": task.stage_branch,
            "merge_commit": info.sha,
            "base": info.base,
            "files": list(info.files),
            "already_merged": info.already_merged,
            "conflicts": list(info.conflicts),
            "resolved_by": resolved_by,
            "check": check,
        }
        verb = "was already merged into" if info.already_merged else "merged into"
        extra = f"; conflicts in {', '.join(info.conflicts)} resolved by {resolved_by}" if info.conflicts else ""
        return Outcome(summary=f"{branch} {verb} {task.stage_branch} at {info.sha[:10]}{extra}", data=data)
