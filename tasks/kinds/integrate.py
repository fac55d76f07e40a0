"""``pr_integ``: merge a branch into the environment's branch, one merge at a time per environment.

The provider writes the merge commit message and may hold the merge; a conflict fails the task naming the
files, and the environment branch is left exactly as it was.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from environments.git import run_git
from environments.merge import merge_into_environment
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


class Decision(BaseModel):
    decision: Literal["merge", "hold"]
    commit_message: str = Field(min_length=1, max_length=2000)
    reason: str = ""


class IntegrateHandler(BaseHandler):
    kind = "pr_integ"

    def prompt(self, ctx: Context, task: TaskInfo) -> Prompt:
        branch = task.request.branch or ""
        stat = run_git(["diff", "--stat", f"{task.stage_branch}...{branch}"], cwd=task.workspace / ".repo")
        body = header(task, branch=branch, title=task.request.title)
        prompt = f"{body}\nTarget: {task.stage_branch}\n\nChanges:\n{stat}"
        return Prompt(system_prompt(self.kind, "an integration engineer", INSTRUCTIONS), prompt)

    def act(self, ctx: Context, task: TaskInfo, answer: Answer, assist: Assist) -> Outcome:
        provider = answer.provider
        decision = parse_json_answer(answer.text, Decision)
        branch = task.request.branch or ""
        if decision.decision == "hold":
            reason = decision.reason or "no reason given"
            return Outcome(summary=f"held by {provider}: {reason}", data={"branch": branch}, status="failed")
        merge = merge_into_environment(task.workspace, task.environment, branch, message=decision.commit_message)
        data = {
            "branch": branch,
            "target": task.stage_branch,
            "merge_commit": merge.sha,
            "files": list(merge.files),
            "already_merged": merge.already_merged,
        }
        verb = "was already merged into" if merge.already_merged else "merged into"
        return Outcome(summary=f"{branch} {verb} {task.stage_branch} at {merge.sha[:10]}", data=data)
