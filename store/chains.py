"""The read side of the PR pipeline: the chain a task belongs to, its dependencies, reviews and merges.

A chain is the tree of tasks linked by ``parent_id`` (a plan and its sub-tasks; a pr_impl, its review, the
re-implementation or integration that followed), read from its root, whichever of its tasks is asked about.
Plain dicts for JSON, like :mod:`store.queries`.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import TERMINAL_STATUSES, Merge, Outbox, Result, Review, Task, TaskDependency

Row = dict[str, Any]
MAX_CHAIN = 500
MAX_DEPTH = 50


def _iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC (as :func:`store.queries.iso`, which imports this module)."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def chain_root(session: Session, task: Task) -> Task:
    """The task at the top of ``task``'s chain (following ``parent_id`` up, at most MAX_DEPTH steps)."""
    node = task
    for _ in range(MAX_DEPTH):
        parent = session.get(Task, node.parent_id) if node.parent_id else None
        if parent is None:
            return node
        node = parent
    return node


def chain(session: Session, task: Task) -> list[Row]:
    """Every task of ``task``'s chain, depth first from the root, each with its depth and dependencies."""
    root = chain_root(session, task)
    order: list[tuple[Task, int]] = []
    stack = [(root, 0)]
    while stack and len(order) < MAX_CHAIN:
        node, depth = stack.pop()
        order.append((node, depth))
        kids = session.scalars(select(Task).where(Task.parent_id == node.id).order_by(Task.created_at, Task.id))
        stack.extend((kid, depth + 1) for kid in reversed(list(kids)))
    ids = [node.id for node, _ in order]
    deps = _edges(session, ids)
    summaries = {r.task_id: r.summary for r in session.scalars(select(Result).where(Result.task_id.in_(ids)))}
    return [
        {
            "id": node.id,
            "kind": node.kind,
            "status": node.status,
            "title": node.title,
            "provider": node.provider,
            "parent_id": node.parent_id,
            "depth": depth,
            "depends_on": deps.get(node.id, []),
            "summary": summaries.get(node.id) or node.reason or "",
            "this": node.id == task.id,
        }
        for node, depth in order
    ]


def _edges(session: Session, ids: list[str]) -> dict[str, list[str]]:
    edges: dict[str, list[str]] = defaultdict(list)
    for edge in session.scalars(select(TaskDependency).where(TaskDependency.task_id.in_(ids))):
        edges[edge.task_id].append(edge.depends_on)
    return edges


def _brief(task: Task) -> Row:
    return {"id": task.id, "kind": task.kind, "status": task.status, "title": task.title}


def dependencies(session: Session, task_id: str) -> tuple[list[Row], list[Row]]:
    """(the tasks ``task_id`` depends on, the tasks that depend on it), oldest first."""
    before = select(Task).join(TaskDependency, TaskDependency.depends_on == Task.id)
    after = select(Task).join(TaskDependency, TaskDependency.task_id == Task.id)
    order = (Task.created_at, Task.id)
    ups = session.scalars(before.where(TaskDependency.task_id == task_id).order_by(*order))
    downs = session.scalars(after.where(TaskDependency.depends_on == task_id).order_by(*order))
    return [_brief(t) for t in ups], [_brief(t) for t in downs]


def review_row(review: Review) -> Row:
    return {
        "task_id": review.task_id,
        "impl_task_id": review.impl_task_id,
        "environment": review.environment,
        "stage": review.stage,
        "branch": review.branch,
        "round": review.round,
        "reviewer": review.reviewer,
        "verdict": review.verdict,
        "summary": review.summary,
        "comments": review.comments,
        "created_at": _iso(review.created_at),
    }


def merge_row(merge: Merge) -> Row:
    return {
        "task_id": merge.task_id,
        "environment": merge.environment,
        "stage": merge.stage,
        "branch": merge.branch,
        "target": merge.target,
        "status": merge.status,
        "base_sha": merge.base_sha,
        "merge_sha": merge.merge_sha,
        "conflict_files": merge.conflict_files,
        "resolved_by": merge.resolved_by,
        "check_passed": merge.check_passed,
        "check": merge.check,
        "updated_at": _iso(merge.updated_at),
    }


def pipeline_detail(session: Session, task: Task) -> Row:
    """What ``tasks show`` adds for the pipeline: chain, dependencies, and the chain's reviews and merges."""
    tasks = chain(session, task)
    ids = [row["id"] for row in tasks]
    depends_on, dependents = dependencies(session, task.id)
    reviews = session.scalars(select(Review).where(Review.task_id.in_(ids)).order_by(Review.created_at, Review.id))
    merges = session.scalars(select(Merge).where(Merge.task_id.in_(ids)).order_by(Merge.created_at, Merge.id))
    return {
        "chain": tasks,
        "depends_on": depends_on,
        "dependents": dependents,
        "reviews": [review_row(r) for r in reviews],
        "merges": [merge_row(m) for m in merges],
    }


# --- how a submitted task's chain ended (``submit --wait``) ----------------------------------------------


def links(session: Session, task: Task) -> list[Row]:
    """``task`` and every task below it (its follow-ups, a plan's sub-tasks and theirs), depth first, each
    with its depth, outcome summary and, for an integration, the commit it merged."""
    order: list[tuple[Task, int]] = []
    stack = [(task, 0)]
    while stack and len(order) < MAX_CHAIN:
        node, depth = stack.pop()
        order.append((node, depth))
        kids = session.scalars(
            select(Task)
            .where(Task.parent_id == node.id)
            .order_by(Task.created_at, Task.id)
            .execution_options(populate_existing=True)
        )
        stack.extend((kid, depth + 1) for kid in reversed(list(kids)))
    ids = [node.id for node, _ in order]
    summaries = {r.task_id: r.summary for r in session.scalars(select(Result).where(Result.task_id.in_(ids)))}
    merges = {m.task_id: m for m in session.scalars(select(Merge).where(Merge.task_id.in_(ids)))}
    owed = set(
        session.scalars(
            select(Outbox.task_id).where(
                Outbox.task_id.in_(ids), Outbox.action == "follow_ups", Outbox.sent_at.is_(None)
            )
        )
    )
    return [
        {
            "id": node.id,
            "kind": node.kind,
            "status": node.status,
            "environment": node.environment,
            "title": node.title,
            "provider": node.provider,
            "depth": depth,
            "pipeline": bool(node.payload.get("pipeline", True)),
            "summary": summaries.get(node.id) or node.reason or "",
            "merge_sha": merges[node.id].merge_sha if node.id in merges else None,
            "merge_target": merges[node.id].target if node.id in merges else None,
            "follow_ups_owed": node.id in owed,
        }
        for node, depth in order
    ]


def chain_end(chain_links: list[Row]) -> Row:
    """Pure: whether the chain is complete (every link terminal, every follow-up made) and how it ended:
    ``landed`` (a plan that succeeded, or any other chain an integration of which merged: a pipeline,
    a submitted ``pr_integ``, a chain followed from its review), ``succeeded`` (no merge was asked for and
    every link succeeded; why is what the root did, e.g. a review's verdict), or ``not_landed`` / ``failed``,
    with why."""
    root = chain_links[0]
    complete = all(link["status"] in TERMINAL_STATUSES and not link["follow_ups_owed"] for link in chain_links)
    merged = [link for link in chain_links if link["kind"] == "pr_integ" and link["status"] == "succeeded"]
    broken = [link for link in chain_links if link["status"] in TERMINAL_STATUSES and link["status"] != "succeeded"]
    wants_merge = (root["kind"] == "pr_impl" and root["pipeline"]) or root["kind"] == "pr_integ"
    if root["kind"] == "plan":
        outcome = "landed" if root["status"] == "succeeded" else "failed"
        why = root["summary"]
    elif merged:  # also a chain followed from its review (`tasks resume --wait` of a stopped review)
        outcome, why = "landed", f"merged into {merged[-1]['merge_target']} at {(merged[-1]['merge_sha'] or '')[:10]}"
    elif wants_merge:
        last = chain_links[-1]
        outcome = "failed" if broken else "not_landed"
        why = f"the chain ended at {last['kind']} {last['id'][:8]} ({last['status']}): {last['summary']}"
    elif broken:
        outcome = "failed"
        why = "; ".join(f"{b['kind']} {b['id'][:8]} {b['status']}: {b['summary']}" for b in broken)
    else:  # nothing to merge (a review of a branch, a dev_task or pr_impl without its pipeline): what it did
        outcome, why = "succeeded", root["summary"]
    return {"complete": complete, "outcome": outcome, "why": why, "ok": outcome in ("landed", "succeeded")}
