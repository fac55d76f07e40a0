"""Submitting work, the same way from the CLI, HTTP and Python: validate, insert the row, enqueue.

    from tasks.submit import submit
    task_id = submit({"kind": "pr_review", "environment": "dev1", "branch": "feature/login"})

Every check runs before anything is written: the payload's field types (:mod:`tasks.schemas`), the fleet, then,
inside the transaction that would write the row, what the database and the repository hold (the environment is
initialized; the tasks named by ``parent_id``, ``review_of`` and ``depends_on`` exist; the branches named
exist). A refused request raises InputError (CLI exit 2, HTTP 422) and leaves no row and no message.

The task row is written with its message owed in the outbox (one transaction), then the message is sent with
the row's id as the Celery task id. When the broker cannot take it, the task stays ``queued`` and the outbox
sends it once the broker is back (:mod:`tasks.sender`); :func:`submit` then raises :class:`NotYetSent` (a
``ServiceUnavailable``: exit 3 in the CLI, 503 over HTTP) whose message and ``task_id`` say the task is
recorded and must not be submitted again. Follow-ups a worker submits (:func:`submit_follow_up`) need no such
word: their message is simply owed.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from environments.git import branch_exists, check_branch_name
from environments.layout import repo_dir
from store import outbox, repo
from store import pipeline as rows
from store.db import session_scope
from store.models import Environment
from switchyard.errors import InputError, NotYetSent
from tasks import dependencies
from tasks.context import Context, get_context
from tasks.schemas import SubmitRequest, check_against_fleet, parse_request
from tasks.send import prepare_database, publish


def submit(
    request: SubmitRequest | dict[str, Any], *, context: Context | None = None, task_id: str | None = None
) -> str:
    """Validate ``request``, record it and enqueue it on its group's queue; returns the task id. Raises
    :class:`NotYetSent` when the task is recorded but the broker is away (the outbox sends it later)."""
    task_id, sent = _submit(request, context or get_context(), task_id)
    if not sent:
        raise NotYetSent(
            f"task {task_id} is recorded (queued) but the broker did not take its message; it will be sent when "
            "the broker is back (is the fleet up? run: switchyard up). Do not submit it again; follow it with: "
            f"switchyard tasks show {task_id}",
            task_id=task_id,
        )
    return task_id


def submit_follow_up(request: SubmitRequest | dict[str, Any], *, context: Context, task_id: str) -> str:
    """:func:`submit` for what a task asks for (a review, sub-tasks): a broker that is away is no error, the
    outbox sends the message when it is back."""
    return _submit(request, context, task_id)[0]


def _submit(request: SubmitRequest | dict[str, Any], ctx: Context, task_id: str | None) -> tuple[str, bool]:
    """Validate, record (task row + owed message, or held) and send; (task id, whether the broker has it)."""
    req = parse_request(request)
    check_against_fleet(req, ctx.fleet)
    group = ctx.fleet.group_for_kind(req.kind)
    task_id = task_id or str(uuid.uuid4())
    prepare_database(ctx.database_url)
    with session_scope(ctx.database_url) as session:
        env = session.get(Environment, req.environment)
        if env is None:
            raise InputError(
                f"environment {req.environment!r} is not initialized; run: switchyard env init --repo PATH"
            )
        check_branches(Path(env.path).parent, req)
        check_references(session, task_id, req)
        repo.create_task(
            session,
            task_id=task_id,
            kind=req.kind,
            group=group.name,
            environment=req.environment,
            stage=req.stage,
            title=req.title or (req.goal or req.branch or "")[:200],
            payload=req.model_dump(mode="json"),
            parent_id=req.parent_id,
        )
        rows.add_dependencies(session, task_id=task_id, depends_on=req.depends_on)
        if req.depends_on:
            rows.hold_task(session, task_id=task_id, waiting_for=req.depends_on)
        else:
            outbox.add(session, task_id=task_id, action=outbox.SEND)
    if req.depends_on:  # held: released (and enqueued) now if its dependencies finished meanwhile, else later
        dependencies.settle(ctx, task_id)
        return task_id, True
    return task_id, publish(ctx, task_id, req.kind)


def check_references(session: Session, task_id: str, req: SubmitRequest) -> None:
    """Every task the request names must exist, so nothing is paid for that a foreign key then refuses."""
    if req.parent_id and repo.get_task(session, req.parent_id) is None:
        raise InputError(f"parent_id names task {req.parent_id!r}, which does not exist; see: switchyard tasks list")
    if req.review_of:
        reviewed = repo.get_task(session, req.review_of)
        if reviewed is None or reviewed.kind not in ("pr_impl", "dev_task"):
            what = "which does not exist" if reviewed is None else f"a {reviewed.kind}, not a pr_impl or dev_task"
            raise InputError(
                f"review_of names task {req.review_of!r}, {what}; name the pr_impl task whose branch is "
                "reviewed, or leave review_of out to review a branch on its own"
            )
    check_dependencies(session, task_id, req.depends_on)


def check_dependencies(session: Session, task_id: str, depends_on: list[str]) -> None:
    """Every dependency must exist and not be the task itself (so no cycle can be made by submitting)."""
    if task_id in depends_on:
        raise InputError(f"task {task_id} cannot depend on itself")
    for dependency in depends_on:
        if repo.get_task(session, dependency) is None:
            raise InputError(f"depends_on names task {dependency!r}, which does not exist; see: switchyard tasks list")


BRANCH_KINDS = ("pr_review", "pr_integ")


def check_branches(workspace: Path, req: SubmitRequest) -> None:
    """The branch a review or integration names, and every branch a change is to start from, must exist."""
    if req.kind in BRANCH_KINDS:
        check_branch(workspace, req.environment, req.branch or "")
    for base in req.base_branches:
        check_branch(workspace, req.environment, base)


def check_branch(workspace: Path, environment: str, branch: str) -> None:
    """``branch`` must be a valid name and exist in the environment's repository now."""
    check_branch_name(branch)
    if not repo_dir(workspace).is_dir():
        raise InputError(
            f"the repository of {environment} is missing ({repo_dir(workspace)}); "
            "run: switchyard env init --repo PATH to repair it"
        )
    if not branch_exists(branch, cwd=repo_dir(workspace)):
        raise InputError(
            f"branch {branch!r} does not exist in the repository of {environment} ({repo_dir(workspace)}); "
            "create or fetch it first"
        )
