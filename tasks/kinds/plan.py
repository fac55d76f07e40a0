"""``plan``: the provider proposes sub-tasks; they are validated, stored and enqueued as child tasks.

Child ids are derived from the parent id and the sub-task's key, so a redelivered plan enqueues nothing twice.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field

from store import repo
from store.db import session_scope
from switchyard.errors import BadAnswer
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

CHILD_KINDS = ("dev_task", "pr_impl")
INSTRUCTIONS = """
Break the goal below into small sub-tasks for other agents. Answer with one JSON object and nothing else:
{"subtasks": [{"key": "s1", "kind": "dev_task" | "pr_impl", "title": "<short>", "description": "<what>",
  "depends_on": ["<key>", ...]}]}
"""


class SubTask(BaseModel):
    key: str = Field(min_length=1, max_length=32)
    kind: Literal["dev_task", "pr_impl"]
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    depends_on: list[str] = Field(default_factory=list)


class Plan(BaseModel):
    subtasks: list[SubTask] = Field(min_length=1)


def check_plan(plan: Plan, *, max_subtasks: int) -> None:
    """Refuse plans that are too large, repeat keys, or depend on keys they do not define."""
    if len(plan.subtasks) > max_subtasks:
        raise BadAnswer(f"the plan has {len(plan.subtasks)} sub-tasks; at most {max_subtasks} are allowed")
    keys = [s.key for s in plan.subtasks]
    if len(set(keys)) != len(keys):
        raise BadAnswer(f"sub-task keys repeat: {keys}")
    for sub in plan.subtasks:
        unknown = [d for d in sub.depends_on if d not in keys or d == sub.key]
        if unknown:
            raise BadAnswer(f"sub-task {sub.key!r} depends on unknown or itself: {unknown}")


def child_id(parent_id: str, key: str) -> str:
    return str(uuid.uuid5(uuid.UUID(parent_id), key))


class PlanHandler(BaseHandler):
    kind = "plan"

    def prompt(self, ctx: Context, task: TaskInfo) -> Prompt:
        limit = ctx.fleet.kind(self.kind).max_subtasks
        body = header(task, goal=task.request.goal, description=task.request.description)
        prompt = f"{body}\nAllowed kinds: {', '.join(CHILD_KINDS)}\nAt most {limit} sub-tasks.\n"
        return Prompt(system_prompt(self.kind, "a technical lead planning work", INSTRUCTIONS), prompt)

    def act(self, ctx: Context, task: TaskInfo, answer: Answer, assist: Assist) -> Outcome:
        from tasks.submit import submit  # noqa: PLC0415 -- tasks.submit imports the app, which includes the kinds

        plan = parse_json_answer(answer.text, Plan)
        check_plan(plan, max_subtasks=ctx.fleet.kind(self.kind).max_subtasks)
        children = []
        for sub in plan.subtasks:
            cid = child_id(task.id, sub.key)
            with session_scope(ctx.database_url) as session:
                exists = repo.get_task(session, cid) is not None
            if not exists:
                request = {
                    "kind": sub.kind,
                    "environment": task.environment,
                    "stage": task.stage,
                    "title": sub.title,
                    "description": sub.description,
                    "parent_id": task.id,
                    "depth": task.request.depth + 1,
                }
                submit(request, context=ctx, task_id=cid)
            children.append({"id": cid, **sub.model_dump()})
        summary = f"planned {len(children)} sub-tasks: " + "; ".join(c["title"] for c in children)
        return Outcome(summary=summary[:500], data={"goal": task.request.goal, "subtasks": children})
