"""``pr_review``: review a branch's diff against its environment branch and store a structured verdict.

The verdict (approve, request_changes or comment, with file and line comments) is stored in the ``reviews``
table; what follows it in a pipeline (another implementation round, the integration) is decided in
:mod:`tasks.pipeline`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from environments.merge import review_diff
from store import pipeline as rows
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
from tasks.schemas import printable

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


def render_feedback(verdict: str, summary: str, comments: list[dict[str, Any]]) -> str:
    """A review as the text a re-implementation is given: the summary, then one line per comment."""
    lines = [f"Verdict: {verdict}. {summary}"]
    lines += [f"- {c['file']}:{c['line']}: {c['body']}" for c in comments]
    return printable("\n".join(lines))  # the provider's words become the next task's payload


class ReviewHandler(BaseHandler):
    kind = "pr_review"

    def prompt(self, ctx: Context, task: TaskInfo) -> Prompt:
        branch = task.request.branch or ""
        diff = review_diff(task.workspace, task.environment, branch, max_chars=ctx.fleet.limits.max_text_chars)
        lines = {"branch": branch, "title": task.request.title, "description": task.request.description}
        body = header(task, **lines, review_round=str(task.request.round) if task.request.review_of else None)
        prompt = f"{body}\nBase: {task.stage_branch}\n\n```diff\n{diff}\n```\n"
        return Prompt(system_prompt(self.kind, "a careful code reviewer", INSTRUCTIONS), prompt)

    def act(self, ctx: Context, task: TaskInfo, answer: Answer, assist: Assist) -> Outcome:
        verdict = parse_json_answer(answer.text, Verdict)
        comments = [c.model_dump() for c in verdict.comments]

        def record(session: Session) -> None:  # with the verdict and the result row (Outcome.rows)
            rows.record_review(
                session,
                task_id=task.id,
                impl_task_id=task.request.review_of,
                environment=task.environment,
                stage=task.stage,
                branch=task.request.branch or "",
                round=task.request.round,
                reviewer=answer.provider,
                verdict=verdict.verdict,
                summary=verdict.summary,
                comments=comments,
            )

        data = {"branch": task.request.branch, "reviewer": answer.provider, "round": task.request.round}
        data.update(verdict.model_dump())
        return Outcome(summary=f"{verdict.verdict}: {verdict.summary}"[:500], data=data, rows=record)
