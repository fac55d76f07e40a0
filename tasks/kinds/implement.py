"""``pr_impl`` and ``dev_task``: ask for a unified diff, apply it on a task branch in the task's own worktree.

The worktree is created from the stage's branch at ``<workspace>/.tasks/<task id>`` and removed after a
successful commit; the branch (``task/<kind>-<id8>`` unless the request names one) stays for review and merge.
"""

from __future__ import annotations

from environments.git import run_git
from environments.patch import apply_and_commit, extract_diff
from environments.worktrees import remove_task_worktree, task_worktree
from tasks.context import Context
from tasks.kinds.base import Answer, Assist, BaseHandler, Outcome, Prompt, TaskInfo, header, system_prompt

INSTRUCTIONS = """
Make the change described below in the repository. Answer with a single unified diff (git format, paths
prefixed a/ and b/) inside a ```diff fenced block, and nothing else.
"""


class ImplementHandler(BaseHandler):
    def __init__(self, kind: str) -> None:
        self.kind = kind

    def branch(self, task: TaskInfo) -> str:
        return task.request.branch or f"task/{task.kind}-{task.short_id}"

    def prompt(self, ctx: Context, task: TaskInfo) -> Prompt:
        files = run_git(["ls-tree", "-r", "--name-only", task.stage_branch], cwd=task.workspace / ".repo")
        body = header(task, title=task.request.title, branch=self.branch(task), description=task.request.description)
        prompt = f"{body}\n\nFiles in {task.stage_branch}:\n{files}"
        return Prompt(system_prompt(self.kind, "a software engineer", INSTRUCTIONS), prompt)

    def act(self, ctx: Context, task: TaskInfo, answer: Answer, assist: Assist) -> Outcome:
        provider = answer.provider
        branch = self.branch(task)
        worktree = task_worktree(
            task.workspace, task.environment, task.id, base_branch=task.stage_branch, branch=branch
        )
        done = run_git(["rev-list", "--count", f"{task.stage_branch}..HEAD"], cwd=worktree).strip()
        if done != "0":  # a redelivered task whose commit already landed: do not apply it twice
            sha = run_git(["rev-parse", "HEAD"], cwd=worktree).strip()
            remove_task_worktree(task.workspace, task.id, keep_branch=True)
            return Outcome(summary=f"committed {sha[:10]} on {branch}", data={"branch": branch, "commit": sha})
        diff = extract_diff(answer.text)
        title = task.request.title or task.kind
        message = f"{title}\n\nSwitchyard task {task.id} ({task.kind}), written by {provider}."
        commit = apply_and_commit(worktree, diff, message=message)
        remove_task_worktree(task.workspace, task.id, keep_branch=True)
        data = {
            "branch": branch,
            "commit": commit.sha,
            "files": list(commit.files),
            "insertions": commit.insertions,
            "deletions": commit.deletions,
            "author": provider,
        }
        return Outcome(summary=f"committed {commit.sha[:10]} on {branch} ({len(commit.files)} files)", data=data)
