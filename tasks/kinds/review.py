"""``pr_review``: review a branch's diff against its environment branch and store a structured verdict."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from environments.merge import review_diff
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
Review the change below. Answer with one JSON object and nothing else:
{"verdict": "approve" | "request_changes" | "comment", "summary": "<one paragraph>",
 "comments": [{"file": "<path>", "line": <line in the new file>, "body": "<comment>"}]}
"""


class ReviewComment(BaseModel):
    file: str = Field(min_length=1)
    line: int = Field(ge=0)
    body: str = Field(min_length=1)


class Verdict(BaseModel):
    verdict: Literal["approve", "request_changes", "comment"]
    summary: str = Field(min_length=1)
    comments: list[ReviewComment] = Field(default_factory=list)


class ReviewHandler(BaseHandler):
    kind = "pr_review"

    def prompt(self, ctx: Context, task: TaskInfo) -> Prompt:
        branch = task.request.branch or ""
        diff = review_diff(task.workspace, task.environment, branch, max_chars=ctx.fleet.limits.max_text_chars)
        body = header(task, branch=branch, title=task.request.title, description=task.request.description)
        prompt = f"{body}\nBase: {task.stage_branch}\n\n```diff\n{diff}\n```\n"
        return Prompt(system_prompt(self.kind, "a careful code reviewer", INSTRUCTIONS), prompt)

    def act(self, ctx: Context, task: TaskInfo, answer: Answer, assist: Assist) -> Outcome:
        provider = answer.provider
        verdict = parse_json_answer(answer.text, Verdict)
        data = {"branch": task.request.branch, "reviewer": provider, **verdict.model_dump()}
        return Outcome(summary=f"{verdict.verdict}: {verdict.summary}"[:500], data=data)
