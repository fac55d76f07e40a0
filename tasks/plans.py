"""A plan's result, kept up to date as its sub-tasks land, and the plan's end.

A plan's attempt proposes sub-tasks and submits them; the plan then waits, parked (``deferred``, reason
:data:`store.pipeline.LANDING`, no lease, no message), while each sub-task's change goes the way of any
change: review by the fleet file's policy (``[kinds.plan] review_subtasks``), then the environment's merge
queue (:mod:`tasks.pipeline`). Each time a task below the plan finishes, the plan's result is rebuilt from
its sub-tasks' chains; once every chain is complete (every task in it terminal and its follow-ups made) the
plan ends: ``succeeded`` when every sub-task landed (a ``pr_integ`` of its chain succeeded, or, for a
sub-plan, it succeeded), else ``failed`` with the sub-tasks that did not. Its result's ``data.outcome`` reads
``running``, then ``succeeded``, ``partial`` (some landed) or ``failed`` (none did).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from store import outbox, repo
from store import pipeline as rows
from store.db import read_scope, session_scope
from store.models import TERMINAL_STATUSES, Merge, Result, Task
from tasks.context import Context

CHANGE_KINDS = ("dev_task", "pr_impl")


def landed(child: Task, below: list[Task], merges: dict[str, Merge]) -> bool:
    """Pure: whether sub-task ``child``'s work is in its environment (``below``: the tasks under it)."""
    if child.kind == "plan":
        return child.status == "succeeded"
    if child.kind not in CHANGE_KINDS:
        return child.status == "succeeded"
    for task in below:
        merge = merges.get(task.id)
        if task.kind == "pr_integ" and task.status == "succeeded" and merge is not None:
            return True
    return False


def child_view(
    task: Task, result: Result | None, keys: dict[str, str], below: list[Task], merges: dict[str, Merge]
) -> dict[str, Any]:
    """One sub-task as the plan's result shows it; ``depends_on`` uses the plan's keys."""
    payload = task.payload
    chain = [task, *below]
    complete = all(t.status in TERMINAL_STATUSES for t in chain)
    merge = next((merges[t.id] for t in below if t.id in merges and t.status == "succeeded"), None)
    return {
        "id": task.id,
        "key": payload.get("plan_key"),
        "kind": task.kind,
        "title": task.title,
        "environment": task.environment,
        "status": task.status,
        "depends_on": [keys.get(i, i) for i in payload.get("depends_on", [])],
        "summary": result.summary if result else (task.reason or ""),
        "branch": (result.data.get("branch") if result else None) or payload.get("branch"),
        "chain_complete": complete,
        "landed": landed(task, below, merges),
        "merge_sha": merge.merge_sha if merge else None,
        "chain": [{"id": t.id, "kind": t.kind, "status": t.status} for t in below],
    }


def aggregate(goal: str | None, children: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Pure: the plan's summary and result data from its children's views."""
    counts = Counter(child["status"] for child in children)
    complete = all(child["chain_complete"] for child in children)
    done = sum(1 for child in children if child["landed"])
    if not complete:
        outcome = "running"
    elif done == len(children):
        outcome = "succeeded"
    else:
        outcome = "partial" if done else "failed"
    pending = [child["key"] or child["id"][:8] for child in children if not child["landed"]]
    summary = f"plan {outcome}: {done}/{len(children)} sub-tasks landed"
    if pending:
        summary += f"; not landed{' yet' if not complete else ''}: {', '.join(map(str, pending))}"
    data = {
        "goal": goal,
        "outcome": outcome,
        "complete": complete,
        "landed": done,
        "counts": dict(counts),
        "subtasks": children,
    }
    return summary, data


def update_plan(ctx: Context, plan_id: str) -> bool:
    """Rebuild the result of plan ``plan_id`` from its sub-tasks' chains, and end the plan when they are
    complete (serialized on the plan's row); True when this call ended it."""
    with session_scope(ctx.database_url) as session:
        found = repo.get_task(session, plan_id)
        if found is None or found.kind != "plan":
            return False
    with session_scope(ctx.database_url) as session:  # the lock comes first: what is read after it is current
        plan = rows.lock_task(session, task_id=plan_id)
        children = rows.children_of(session, plan_id)
        if not children or not (rows.is_landing(plan) or plan.status in TERMINAL_STATUSES):
            return False  # a plan still planning writes its own result when it parks, then comes back here
        below = {child.id: rows.subtree(session, child.id) for child in children}
        every = [t.id for t in children] + [t.id for tasks in below.values() for t in tasks]
        merges = {m.task_id: m for m in session.scalars(select(Merge).where(Merge.task_id.in_(every)))}
        results = {r.task_id: r for r in session.scalars(select(Result).where(Result.task_id.in_(every)))}
        keys = {child.id: str(child.payload.get("plan_key") or child.id[:8]) for child in children}
        views = [child_view(c, results.get(c.id), keys, below[c.id], merges) for c in children]
        if rows.follow_ups_owed(session, every):  # a follow-up is still to be made: not complete yet
            views = [{**view, "chain_complete": False} for view in views]
        summary, data = aggregate(plan.payload.get("goal"), views)
        repo.upsert_result(
            session,
            environment=plan.environment,
            stage=plan.stage,
            task_id=plan.id,
            kind=plan.kind,
            status=("succeeded" if data["outcome"] == "succeeded" else "failed") if data["complete"] else "running",
            summary=summary[:2000],
            data=data,
        )
        if not rows.is_landing(plan) or not data["complete"]:
            return False
        status = "succeeded" if data["outcome"] == "succeeded" else "failed"
        reason = None if status == "succeeded" else summary[:4000]
        return repo.finish_task(session, task_id=plan.id, status=status, reason=reason)


def sweep_landing(ctx: Context, *, settle_dependents: Callable[[Context, str], None]) -> int:
    """The safety net, run by the periodic sender: end every parked plan whose sub-tasks' chains are complete
    (the last of them ends it as it finishes; this catches one whose follow-ups were made by the sender
    later). How many it ended."""
    with session_scope(ctx.database_url) as session:
        parked = rows.landing_plans(session)
    ended = 0
    for plan_id in parked:
        if update_plan(ctx, plan_id):
            ended += 1
            _plan_ended(ctx, plan_id, settle_dependents)
    return ended


def _plan_ended(ctx: Context, plan_id: str, settle_dependents: Callable[[Context, str], None]) -> None:
    settle_dependents(ctx, plan_id)
    with session_scope(ctx.database_url) as session:
        outbox.mark_sent(session, task_id=plan_id, action=outbox.FOLLOW_UPS)
    after_finished(ctx, plan_id, settle_dependents=settle_dependents)


def after_finished(ctx: Context, task_id: str, *, settle_dependents: Callable[[Context, str], None]) -> None:
    """``task_id`` has just finished and its follow-ups are made: bring the plans above it up to date. A plan
    this ends has its own follow-ups run here (its dependents settled, its own plan updated in turn)."""
    current = task_id
    while True:
        with read_scope(ctx.database_url) as session:  # a look: update_plan locks the plan
            plan_id = rows.nearest_plan(session, current)
        if plan_id is None or not update_plan(ctx, plan_id):
            return
        settle_dependents(ctx, plan_id)
        with session_scope(ctx.database_url) as session:
            outbox.mark_sent(session, task_id=plan_id, action=outbox.FOLLOW_UPS)
        current = plan_id  # its own plan, if any, next
