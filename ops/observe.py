"""What the chaos suite reads while and after a fault runs: task trees, attempts, the simulator's bill and the
environment branches. Reads only; the decisions are :mod:`ops.verdict`'s."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import httpx
from sqlalchemy import select

from environments.git import git_ok, is_ancestor, run_git
from environments.layout import repo_dir
from ops.verdict import AttemptRow, Marker, TaskRow
from store.db import session_scope
from store.models import Attempt, Review, Spend, Task
from switchyard.errors import GitError
from tasks.context import Context

ENV_BRANCHES = "refs/heads/env/"
HTTP_TIMEOUT_S = 10.0


def tracked(ctx: Context, ids: Iterable[str]) -> dict[str, Marker]:
    """Status and attempt count of ``ids`` and of every task created under them (sub-tasks, follow-ups)."""
    with session_scope(ctx.database_url) as session:
        rows: dict[str, Marker] = {}
        frontier = list(dict.fromkeys(ids))
        query = select(Task.id, Task.status, Task.attempts)
        found = session.execute(query.where(Task.id.in_(frontier))).all()
        while found:
            rows.update({r.id: (r.status, r.attempts) for r in found})
            frontier = [r.id for r in found]
            found = [r for r in session.execute(query.where(Task.parent_id.in_(frontier))).all() if r.id not in rows]
    return rows


def task_rows(ctx: Context, ids: Iterable[str]) -> list[TaskRow]:
    """The rows :func:`ops.verdict.lost` needs for ``ids`` (a task tree already walked by :func:`tracked`)."""
    wanted = list(ids)
    first_stage = ctx.fleet.environments.stages[0]
    with session_scope(ctx.database_url) as session:
        verdicts = dict(session.execute(select(Review.task_id, Review.verdict).where(Review.task_id.in_(wanted))).all())
        return [
            TaskRow(
                id=t.id,
                kind=t.kind,
                status=t.status,
                parent_id=t.parent_id,
                reason=t.reason,
                pipeline=_in_pipeline(t.kind, t.payload),
                stage_is_first=t.stage == first_stage,
                verdict=verdicts.get(t.id),
            )
            for t in session.scalars(select(Task).where(Task.id.in_(wanted)))
        ]


def _in_pipeline(kind: str, payload: dict[str, object]) -> bool:
    if kind == "pr_impl":
        return bool(payload.get("pipeline", True))
    return kind == "pr_review" and payload.get("review_of") is not None


def attempt_rows(ctx: Context, ids: Iterable[str] | None = None, *, since: datetime | None = None) -> list[AttemptRow]:
    """Every attempt of ``ids`` (or, with ``since``, of any task, started since then) with its ledger row's
    settled charge."""
    wanted = list(ids or [])
    which = Attempt.started_at >= since if since is not None else Attempt.task_id.in_(wanted)
    with session_scope(ctx.database_url) as session:
        found = list(session.scalars(select(Attempt).where(which)))
        keys = list({a.task_id for a in found})
        charges = {
            (s.task_id, s.attempt): s.charged_micros
            for s in session.scalars(select(Spend).where(Spend.task_id.in_(keys)))
            if s.state == "settled"
        }
        return [
            AttemptRow(
                task_id=a.task_id,
                attempt=a.attempt,
                provider=a.provider,
                status=a.status,
                cost_micros=a.cost_micros,
                charged_micros=charges.get((a.task_id, a.attempt), 0),
                has_answer=a.answer is not None,
            )
            for a in found
        ]


def answered_calls(simulator_url: str) -> dict[str, int]:
    """Per provider, the calls the simulator answered with a whole reply since it started (its bill)."""
    state = httpx.get(f"{simulator_url}/_sim/state", timeout=HTTP_TIMEOUT_S).raise_for_status().json()
    return {name: int(view.get("answered", 0)) for name, view in state["providers"].items()}


def bill_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after.get(name, 0) - before.get(name, 0) for name in after}


def env_branches(workspace: Path) -> dict[str, str | None]:
    """``env/*`` branch → the commit it names (None when it names no valid commit)."""
    cwd = repo_dir(workspace)
    out = run_git(["for-each-ref", "--format=%(refname) %(objectname)", ENV_BRANCHES], cwd=cwd)
    heads: dict[str, str | None] = {}
    for line in out.splitlines():
        ref, sha = line.split(" ", 1)
        valid = git_ok(["cat-file", "-e", f"{sha}^{{commit}}"], cwd=cwd)
        heads[ref.removeprefix("refs/heads/")] = sha if valid else None
    return heads


def ancestry(workspace: Path) -> Callable[[str, str], bool]:
    """``is_ancestor(old, new)`` in the workspace's repository, False when git cannot tell."""
    cwd = repo_dir(workspace)

    def check(old: str, new: str) -> bool:
        try:
            return is_ancestor(old, new, cwd=cwd)
        except GitError:
            return False

    return check
