"""Tasks that wait for other tasks: a plan's sub-tasks, or anything submitted with ``depends_on``.

A task with unfinished dependencies is *held* when it is submitted: its row exists (``deferred``, reason
:data:`store.pipeline.HELD`) but no message is sent, so it costs no polling. Each time a task reaches its
terminal status, :func:`on_finished` settles every task that depends on it: when all of a held task's
dependencies succeeded it is released (its branch will start from theirs) and its message is owed in the
outbox in the same transaction, then sent (by the periodic sender if the broker is away); when one of them
did not, it is skipped (``cancelled``) or failed, as ``[kinds.plan] on_child_failure`` says, and so are the
tasks that depend on it in turn. Settling locks the held task's row first, so two dependencies finishing at
the same moment release it exactly once. The handlers' ``gate`` is the safety net: a task that runs before
its dependencies finished is deferred, or ended when one of them failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from store import outbox, repo
from store import pipeline as rows
from store.db import read_scope, session_scope
from store.models import TERMINAL_STATUSES, Task
from tasks.context import Context
from tasks.plans import after_finished
from tasks.send import publish

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """What to do with a task given its dependencies: ``wait``, ``release``, or end it with ``status``."""

    action: str  # wait, release, end
    status: str = ""
    reason: str = ""


def decide(dependencies: list[tuple[str, str, str]], *, on_failure: str) -> Verdict:
    """Pure: from (id, title, status) of each dependency and the failure policy (``skip`` or ``fail``)."""
    broken = [(i, title, s) for i, title, s in dependencies if s in TERMINAL_STATUSES and s != "succeeded"]
    if broken:
        named = ", ".join(f"{i[:8]} ({title or 'untitled'}) {status}" for i, title, status in broken)
        verb = "skipped" if on_failure == "skip" else "failed"
        status = "cancelled" if on_failure == "skip" else "failed"
        return Verdict("end", status, f"{verb}: a task it depends on did not succeed: {named}")
    if all(s == "succeeded" for _, _, s in dependencies):
        return Verdict("release")
    return Verdict("wait")


def pending(dependencies: list[tuple[str, str, str]]) -> str:
    waiting = [f"{i[:8]} ({s})" for i, _, s in dependencies if s != "succeeded"]
    return "waiting for the tasks it depends on: " + ", ".join(waiting)


def _described(tasks: list[Task]) -> list[tuple[str, str, str]]:
    return [(t.id, t.title, t.status) for t in tasks]


def on_finished(ctx: Context, task_id: str) -> None:
    """Settle every held task that depends on ``task_id`` (which has just reached its terminal status)."""
    with read_scope(ctx.database_url) as session:  # a look: settling each locks it (store/db.py)
        dependents = rows.dependents_of(session, task_id)
    for dependent in dependents:
        settle(ctx, dependent)


def settle(ctx: Context, task_id: str) -> str:
    """Release, end or leave held task ``task_id``; returns what was done (``wait`` when nothing)."""
    with session_scope(ctx.database_url) as session:
        held = rows.lock_held(session, task_id=task_id)
        if held is None:
            return "wait"
        deps = rows.dependencies_of(session, task_id)
        verdict = decide(_described(deps), on_failure=ctx.fleet.kind("plan").on_child_failure)
        kind, parent = held.kind, held.parent_id
        if verdict.action == "release":
            payload = {**held.payload, "base_branches": rows.branches_of(session, [d.id for d in deps])}
            if not rows.release_held(session, task_id=task_id, payload=payload):
                return "wait"
            outbox.add(session, task_id=task_id, action=outbox.SEND)  # owed with the release, sent below
        elif verdict.action == "end":
            repo.finish_task(session, task_id=task_id, status=verdict.status, reason=verdict.reason)
    if verdict.action == "release":
        sent = publish(ctx, task_id, kind)
        log.info("task %s released: its dependencies succeeded%s", task_id, "" if sent else " (sent later)")
    elif verdict.action == "end":
        log.info("task %s %s: %s", task_id, verdict.status, verdict.reason)
        _ended(ctx, task_id, parent)
    return verdict.action


def _ended(ctx: Context, task_id: str, parent_id: str | None) -> None:
    """What follows a task this module ended itself (no attempt loop ran it): its dependents and its plan;
    then its ``follow_ups`` row (owed since :func:`store.repo.finish_task`) is done."""
    on_finished(ctx, task_id)
    with session_scope(ctx.database_url) as session:
        outbox.mark_sent(session, task_id=task_id, action=outbox.FOLLOW_UPS)
    if parent_id:
        after_finished(ctx, task_id, settle_dependents=on_finished)


def gate(ctx: Context, task_id: str, kind: str) -> str | None:
    """Why ``task_id`` cannot run yet (None: its dependencies all succeeded). A task whose dependency did
    not succeed is ended here, as :func:`settle` would have; the reason says so."""
    with session_scope(ctx.database_url) as session:
        deps = _described(rows.dependencies_of(session, task_id))
        task = repo.get_task(session, task_id)
        parent = task.parent_id if task else None
    if not deps:
        return None
    verdict = decide(deps, on_failure=ctx.fleet.kind("plan").on_child_failure)
    if verdict.action == "release":
        return None
    if verdict.action == "end":
        with session_scope(ctx.database_url) as session:
            ended = repo.finish_task(session, task_id=task_id, status=verdict.status, reason=verdict.reason)
        if ended:
            _ended(ctx, task_id, parent)
        return verdict.reason
    return pending(deps)
