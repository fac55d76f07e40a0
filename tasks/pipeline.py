"""What happens between tasks: follow-ups after a task reaches its terminal status.

The PR pipeline is a chain of tasks linked by ``parent_id``, each follow-up the child of the task whose
outcome caused it, so ``switchyard tasks show`` can walk it from any of its tasks:

    pr_impl (round 1)                      submitted with pipeline on (the default; --no-pipeline turns it off),
                                           or a plan's dev_task or pr_impl sub-task (reviewed unless
                                           [kinds.plan] review_subtasks = false: then integrated at once)
    └── pr_review                          on a provider other than the implementer's (avoid_providers)
        ├── request_changes → pr_impl (round 2, same branch, the comments as feedback)
        │                     └── pr_review → …   at most [kinds.pr_impl] review_rounds re-implementations
        └── approve → pr_integ             when [kinds.pr_review] auto_integrate (the default)

A ``comment`` verdict, or ``request_changes`` once the rounds are used up, ends the chain without merging.
Follow-up ids are derived from the task that causes them (uuid5), so a task whose follow-ups ran twice
(a redelivery, or the outbox's sender after a worker died) enqueues each of them once. That they run at all is
the outbox's promise: the ``follow_ups`` row is committed with the task's terminal status
(:func:`store.repo.finish_task`), and each follow-up's message is owed with its task row, so a broker that is
away only delays them. Besides the chain, every terminal task settles the tasks that
depend on it (:mod:`tasks.dependencies`) and brings its plan's result up to date (:mod:`tasks.plans`).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store import outbox, repo
from store import pipeline as rows
from store.db import session_scope
from tasks import dependencies
from tasks.context import Context
from tasks.kinds.base import Outcome, TaskInfo
from tasks.kinds.review import render_feedback
from tasks.plans import after_finished, update_plan
from tasks.submit import submit_follow_up

log = logging.getLogger(__name__)


def follow_up_id(task_id: str, step: str) -> str:
    return str(uuid.uuid5(uuid.UUID(task_id), step))


def after_terminal(ctx: Context, task: TaskInfo, status: str, outcome: Outcome | None) -> None:
    """Enqueue what follows ``task`` (reviews, re-implementations, integrations), settle the tasks that
    depend on it, and update its plan; then mark its ``follow_ups`` row (owed in the outbox since its terminal
    status was committed) done. Safe to call more than once for the same task: when any step fails the row
    stays owed, and the periodic sender (:mod:`tasks.sender`) calls this again. The plans above the task are
    updated last (and a plan whose sub-tasks have all landed or ended is ended there)."""
    if status == "succeeded" and outcome is not None:
        request = next_step(ctx, task, outcome.data)
        if request is not None:
            step, payload = request
            submit_once(ctx, payload, follow_up_id(task.id, step))
    dependencies.on_finished(ctx, task.id)
    if task.kind == "plan":
        update_plan(ctx, task.id)
    with session_scope(ctx.database_url) as session:
        outbox.mark_sent(session, task_id=task.id, action=outbox.FOLLOW_UPS)
    # after the mark: of two tasks of one plan finishing together, the later to lock the plan sees both done
    after_finished(ctx, task.id, settle_dependents=dependencies.on_finished)


def nothing_follows(ctx: Context, session: Session, task: TaskInfo, status: str, outcome: Outcome | None) -> bool:
    """Whether :func:`after_terminal` would have nothing to do for ``task``, read in the transaction that gives
    it its terminal status: no next step, not a plan, no task depending on it, no plan above it. Then its
    ``follow_ups`` row is marked done in that same transaction and :func:`after_terminal` is not called."""
    if task.kind == "plan" or (status == "succeeded" and outcome is not None and next_step(ctx, task, outcome.data)):
        return False
    rows.lock_dependents(session, task.id)
    return not rows.dependents_of(session, task.id) and rows.nearest_plan(session, task.id) is None


def next_step(ctx: Context, task: TaskInfo, data: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """Pure given the fleet: the follow-up a succeeded task asks for, as (step name, request), or None."""
    request = task.request
    common = {
        "environment": task.environment,
        "stage": task.stage,
        "branch": data.get("branch") or request.branch,
        "title": request.title,
        "description": request.description,
        "parent_id": task.id,
        "depth": request.depth,
    }
    author = data.get("author")
    lands = task.kind == "dev_task" and request.plan_key is not None  # a plan's sub-task: its change must land
    if (lands or (task.kind == "pr_impl" and request.pipeline)) and common["branch"]:
        if request.plan_key is not None and not ctx.fleet.kind("plan").review_subtasks:
            return "integrate", {**common, "kind": "pr_integ", "implementer": author}
        review = {"kind": "pr_review", "review_of": task.id, "round": request.round, "implementer": author}
        return "review", {**common, **review, "avoid_providers": [author] if author else []}
    if task.kind != "pr_review" or request.review_of is None:
        return None
    verdict = data.get("verdict")
    if verdict == "request_changes" and request.round <= ctx.fleet.kind("pr_impl").review_rounds:
        feedback = render_feedback(verdict, str(data.get("summary", "")), list(data.get("comments", [])))
        again = {"kind": "pr_impl", "round": request.round + 1, "feedback": feedback[: ctx.fleet.limits.max_text_chars]}
        return "implement", {**common, **again}
    first_stage = ctx.fleet.environments.stages[0]
    if verdict == "approve" and ctx.fleet.kind("pr_review").auto_integrate and task.stage == first_stage:
        return "integrate", {**common, "kind": "pr_integ", "implementer": request.implementer}
    return None


def submit_once(ctx: Context, request: dict[str, Any], task_id: str) -> bool:
    """Submit ``request`` as ``task_id`` unless a task with that id exists; True when this call did it."""

    with session_scope(ctx.database_url) as session:
        if repo.get_task(session, task_id) is not None:
            return False
    try:
        submit_follow_up({k: v for k, v in request.items() if v is not None}, context=ctx, task_id=task_id)
    except IntegrityError:  # another process submitted it at the same moment
        return False
    log.info("follow-up %s (%s) of task %s enqueued", task_id, request["kind"], request.get("parent_id"))
    return True
