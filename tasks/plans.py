"""A plan's result, kept up to date as its sub-tasks finish.

The plan task itself succeeds once its sub-tasks are validated and stored (it has exactly one terminal status,
like every task); its result row then follows the children: each time one finishes, the result is rebuilt
from the children's rows, and ``data.outcome`` moves from ``running`` to ``succeeded`` (every sub-task
succeeded), ``partial`` (some did) or ``failed`` (none did) when the last one finishes.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import select

from store import pipeline as rows
from store import repo
from store.db import session_scope
from store.models import TERMINAL_STATUSES, Result, Task
from tasks.context import Context


def child_view(task: Task, result: Result | None, keys: dict[str, str]) -> dict[str, Any]:
    """One sub-task as the plan's result shows it; ``depends_on`` uses the plan's keys."""
    payload = task.payload
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
    }


def aggregate(goal: str | None, children: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Pure: the plan's summary and result data from its children's views."""
    counts = Counter(child["status"] for child in children)
    complete = all(child["status"] in TERMINAL_STATUSES for child in children)
    succeeded = counts.get("succeeded", 0)
    if not complete:
        outcome = "running"
    elif succeeded == len(children):
        outcome = "succeeded"
    else:
        outcome = "partial" if succeeded else "failed"
    others = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()) if status != "succeeded")
    summary = f"plan {outcome}: {succeeded}/{len(children)} sub-tasks succeeded" + (f"; {others}" if others else "")
    data = {"goal": goal, "outcome": outcome, "complete": complete, "counts": dict(counts), "subtasks": children}
    return summary, data


def update_plan(ctx: Context, plan_id: str) -> None:
    """Rebuild the result of plan ``plan_id`` from its children (serialized on the plan's row)."""
    with session_scope(ctx.database_url) as session:
        found = repo.get_task(session, plan_id)
        if found is None or found.kind != "plan":
            return
    with session_scope(ctx.database_url) as session:  # the lock comes first: what is read after it is current
        plan = rows.lock_task(session, task_id=plan_id)
        if plan.status != "succeeded":
            return  # a plan still running writes its own result when it finishes, then comes back here
        children = rows.children_of(session, plan_id)
        ids = [child.id for child in children]
        results = {r.task_id: r for r in session.scalars(select(Result).where(Result.task_id.in_(ids)))}
        keys = {child.id: str(child.payload.get("plan_key") or child.id[:8]) for child in children}
        views = [child_view(child, results.get(child.id), keys) for child in children]
        summary, data = aggregate(plan.payload.get("goal"), views)
        repo.upsert_result(
            session,
            environment=plan.environment,
            stage=plan.stage,
            task_id=plan.id,
            kind=plan.kind,
            status=plan.status,
            summary=summary[:2000],
            data=data,
        )
