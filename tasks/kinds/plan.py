"""``plan``: the provider proposes sub-tasks with dependencies; they are validated, stored and run in order.

Validation refuses (as a BadAnswer, so another provider may plan better): unknown kinds or environments,
repeated keys, dependencies on unknown keys, cycles (named, e.g. ``s1 → s2 → s1``), more than
``[kinds.plan] max_subtasks`` sub-tasks, and plan sub-tasks deeper than ``max_depth``. Sub-tasks are then
submitted in dependency order with ``depends_on`` (see :mod:`tasks.dependencies`): those without
dependencies are enqueued at once and run in parallel; the others wait, held, for theirs. Child ids are
derived from the parent id and the sub-task's key, so a redelivered plan enqueues nothing twice.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy import select

from store import repo
from store.db import session_scope
from store.models import Environment
from switchyard.errors import BadAnswer
from tasks.context import Context
from tasks.kinds.base import (
    LANDING,
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
from tasks.schemas import one_line, printable
from tasks.submit import submit_follow_up

CHILD_KINDS = ("dev_task", "pr_impl", "plan")
INSTRUCTIONS = """
Break the goal below into small sub-tasks for other agents. Answer with one JSON object and nothing else:
{"subtasks": [{"key": "s1", "kind": "dev_task" | "pr_impl", "title": "<short>", "description": "<what>",
  "depends_on": ["<key>", ...]}]}
A sub-task starts from the work of the sub-tasks it depends on; independent ones run in parallel.
"""


class SubTask(BaseModel):
    key: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    kind: Literal["dev_task", "pr_impl", "plan"]
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    environment: str | None = None
    depends_on: list[str] = Field(default_factory=list)


class Plan(BaseModel):
    subtasks: list[SubTask] = Field(min_length=1)


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path that returns to its start (``[a, b, a]``), or None when there is none."""
    state: dict[str, str] = {}  # visiting, done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "visiting"
        path.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == "visiting":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = "done"
        return None

    for start in edges:
        if start not in state and (found := visit(start)):
            return found
    return None


def order(plan: Plan) -> list[SubTask]:
    """The sub-tasks with every dependency before its dependents (the plan is known to be acyclic)."""
    done: dict[str, SubTask] = {}
    subs = {sub.key: sub for sub in plan.subtasks}
    while len(done) < len(subs):
        for sub in plan.subtasks:
            if sub.key not in done and all(dep in done for dep in sub.depends_on):
                done[sub.key] = sub
    return list(done.values())


def check_plan(plan: Plan, *, max_subtasks: int, environments: list[str], depth: int, max_depth: int) -> None:
    """Refuse a plan the fleet cannot run, naming what is wrong."""
    if len(plan.subtasks) > max_subtasks:
        raise BadAnswer(f"the plan has {len(plan.subtasks)} sub-tasks; at most {max_subtasks} are allowed")
    keys = [s.key for s in plan.subtasks]
    if len(set(keys)) != len(keys):
        raise BadAnswer(f"sub-task keys repeat: {keys}")
    for sub in plan.subtasks:
        unknown = [d for d in sub.depends_on if d not in keys]
        if unknown:
            raise BadAnswer(f"sub-task {sub.key!r} depends on unknown sub-tasks {unknown}; known: {keys}")
        if sub.environment is not None and sub.environment not in environments:
            raise BadAnswer(
                f"sub-task {sub.key!r} names unknown environment {sub.environment!r}; known: {environments}"
            )
        if sub.kind == "plan" and depth + 1 > max_depth:
            raise BadAnswer(f"sub-task {sub.key!r} is a plan, but plans may nest only {max_depth} levels deep")
    cycle = find_cycle({sub.key: sub.depends_on for sub in plan.subtasks})
    if cycle:
        raise BadAnswer(f"the plan's dependencies form a cycle: {' → '.join(cycle)}")


def child_id(parent_id: str, key: str) -> str:
    return str(uuid.uuid5(uuid.UUID(parent_id), key))


class PlanHandler(BaseHandler):
    kind = "plan"

    def prompt(self, ctx: Context, task: TaskInfo) -> Prompt:
        config = ctx.fleet.kind(self.kind)
        kinds = [k for k in CHILD_KINDS if k != "plan" or task.request.depth < config.max_depth]
        body = header(task, goal=task.request.goal, description=task.request.description)
        prompt = f"{body}\nAllowed kinds: {', '.join(kinds)}\nAt most {config.max_subtasks} sub-tasks.\n"
        return Prompt(system_prompt(self.kind, "a technical lead planning work", INSTRUCTIONS), prompt)

    def act(self, ctx: Context, task: TaskInfo, answer: Answer, assist: Assist) -> Outcome:
        config = ctx.fleet.kind(self.kind)
        plan = parse_json_answer(answer.text, Plan)
        with session_scope(ctx.database_url) as session:  # sub-tasks may go only where a workspace exists
            environments = list(session.scalars(select(Environment.name).order_by(Environment.name)))
        check_plan(
            plan,
            max_subtasks=config.max_subtasks,
            environments=environments,
            depth=task.request.depth,
            max_depth=config.max_depth,
        )
        children = [self._submit(ctx, task, sub) for sub in order(plan)]
        summary = f"planned {len(children)} sub-tasks: " + "; ".join(sub.title for sub in order(plan))
        data = {"goal": task.request.goal, "subtasks": children}
        return Outcome(summary=summary[:500], data=data, status=LANDING)  # ends when they landed (tasks/plans.py)

    def _submit(self, ctx: Context, task: TaskInfo, sub: SubTask) -> dict[str, object]:

        cid = child_id(task.id, sub.key)
        with session_scope(ctx.database_url) as session:
            exists = repo.get_task(session, cid) is not None
        if not exists:
            request: dict[str, object] = {
                "kind": sub.kind,
                "environment": sub.environment or task.environment,
                "stage": task.stage,
                "title": one_line(sub.title),  # the provider's words: fit for the fields, not refused
                "description": printable(sub.description),
                "parent_id": task.id,
                "depth": task.request.depth + 1,
                "plan_key": sub.key,
                "depends_on": [child_id(task.id, dep) for dep in sub.depends_on],
            }
            if sub.kind == "plan":
                request["goal"] = printable(sub.description or sub.title)
            submit_follow_up(request, context=ctx, task_id=cid)  # a broker that is away: sent later
        return {"id": cid, **sub.model_dump()}
