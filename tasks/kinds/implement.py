"""``pr_impl`` and ``dev_task``: the provider's change becomes a commit on the task's branch, in its own worktree.

The worktree is ``<workspace>/.tasks/<task id>`` on ``task/<kind>-<id8>`` (or the branch the request names, e.g.
a re-implementation after review), made from the stage branch, or from the branches of the tasks it depends on
(the first, with the others merged in). With the ``api`` transport the answer is a unified diff applied with
``git apply --3way``; with ``cli`` the agent has edited the worktree in place and what changed is committed. An
empty or unappliable change is a PatchRejected (the next provider tries). The worktree is removed after the
commit and kept after a failure, for inspection; the branch stays for review and merge (the integration
deletes it once merged: :mod:`environments.branches`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from environments.branches import task_branch
from environments.git import branch_exists, run_git
from environments.merge import bring_in, review_diff
from environments.patch import (
    CommitInfo,
    apply_and_commit,
    commit_info,
    commit_worktree,
    discard_uncommitted,
    extract_diff,
)
from environments.worktrees import remove_task_worktree, task_worktree
from tasks import dependencies
from tasks.context import Context
from tasks.kinds.base import Answer, Assist, BaseHandler, Outcome, Prompt, TaskInfo, header, system_prompt

MARKER = "Switchyard task"  # every commit a task makes says "Switchyard task <id> (<kind>)"
INSTRUCTIONS = """
Make the change described below in the repository. Answer with a single unified diff (git format, paths
prefixed a/ and b/) inside a ```diff fenced block, and nothing else. When review comments are given, the
branch already holds the earlier attempt: write the diff against it and address every comment.
"""

log = logging.getLogger(__name__)


def start_ref(task_id: str) -> str:
    return f"refs/switchyard/start/{task_id}"


class ImplementHandler(BaseHandler):
    def __init__(self, kind: str) -> None:
        self.kind = kind

    def branch(self, task: TaskInfo) -> str:
        return task.request.branch or task_branch(task.kind, task.id)

    def base(self, task: TaskInfo) -> str:
        """Where a new branch starts: the first dependency's branch, else the stage's branch."""
        return task.request.base_branches[0] if task.request.base_branches else task.stage_branch

    def gate(self, ctx: Context, task: TaskInfo) -> str | None:
        return dependencies.gate(ctx, task.id, task.kind)

    def workdir(self, ctx: Context, task: TaskInfo) -> Path | None:
        return self.worktree(task)

    def worktree(self, task: TaskInfo) -> Path:
        """The task's worktree on its branch, created on demand, with every dependency's work brought in."""
        path = task_worktree(
            task.workspace, task.environment, task.id, base_branch=self.base(task), branch=self.branch(task)
        )
        bring_in(path, task.request.base_branches[1:], message=f"Bring in work task {task.id} builds on")
        # remember where the task's own work starts (a CLI agent may commit by itself); set once
        run_git(["update-ref", start_ref(task.id), "HEAD", ""], cwd=path, check=False)
        return path

    def prompt(self, ctx: Context, task: TaskInfo) -> Prompt:
        repo = task.workspace / ".repo"
        branch = self.branch(task)
        ref = branch if branch_exists(branch, cwd=repo) else self.base(task)
        files = run_git(["ls-tree", "-r", "--name-only", ref], cwd=repo)
        lines = {"title": task.request.title, "branch": branch, "description": task.request.description}
        body = header(task, **lines, review_round=str(task.request.round) if task.request.round > 1 else None)
        prompt = f"{body}\n\nFiles in {ref}:\n{files}"
        if task.request.feedback:
            limit = ctx.fleet.limits.max_text_chars
            done = review_diff(task.workspace, task.environment, branch, max_chars=limit)
            prompt += (
                f"\nReview comments to address:\n{task.request.feedback}\n\nThe branch so far:\n```diff\n{done}```\n"
            )
        return Prompt(system_prompt(self.kind, "a software engineer", INSTRUCTIONS), prompt)

    def act(self, ctx: Context, task: TaskInfo, answer: Answer, assist: Assist) -> Outcome:
        worktree = self.worktree(task)
        title = task.request.title or task.kind
        message = f"{title}\n\n{MARKER} {task.id} ({task.kind}), written by {answer.provider}."
        landed = self._landed(worktree, task)
        if landed:  # a redelivered task whose commit is there already: do not apply it twice
            commit = commit_info(worktree, landed)
        elif answer.transport == "cli":
            commit = commit_worktree(worktree, base=self._start(worktree, task), message=message)
        else:
            if discard_uncommitted(worktree):  # a run killed while applying this same answer: start it over
                log.warning("task %s: a half-applied patch of an earlier run was discarded", task.id)
            commit = apply_and_commit(worktree, extract_diff(answer.text), message=message)
        own = run_git(["rev-list", "--reverse", f"{self._start(worktree, task)}..{commit.sha}"], cwd=worktree).split()
        run_git(["update-ref", "-d", start_ref(task.id)], cwd=worktree, check=False)
        remove_task_worktree(task.workspace, task.id, keep_branch=True)
        return self._outcome(task, commit, own or [commit.sha], answer.provider)

    def _landed(self, worktree: Path, task: TaskInfo) -> str | None:
        grep = [
            "log",
            "-1",
            "--format=%H",
            "--fixed-strings",
            f"--grep={MARKER} {task.id} ",
            self.base(task) + "..HEAD",
        ]
        return run_git(grep, cwd=worktree).strip() or None

    def _start(self, worktree: Path, task: TaskInfo) -> str:
        """Where HEAD was when the worktree was made for this task (before an agent edited it)."""
        found = run_git(["rev-parse", "--verify", "--quiet", start_ref(task.id)], cwd=worktree, check=False).strip()
        return found or "HEAD"

    def _outcome(self, task: TaskInfo, commit: CommitInfo, commits: list[str], provider: str) -> Outcome:
        branch = self.branch(task)
        data = {
            "branch": branch,
            "base": self.base(task),
            "commit": commit.sha,
            "commits": commits,
            "files": list(commit.files),
            "insertions": commit.insertions,
            "deletions": commit.deletions,
            "author": provider,
            "round": task.request.round,
        }
        stat = f"{len(commit.files)} files, +{commit.insertions} -{commit.deletions}"
        return Outcome(summary=f"committed {commit.sha[:10]} on {branch} ({stat})", data=data)
