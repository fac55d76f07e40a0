"""Submitting and following work: ``submit``, ``tasks list``, ``tasks show``, and acting on a task:
``tasks retry``, ``tasks cancel``, ``tasks resume`` (tasks/actions.py)."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.context import db_context
from cli.detail import show_detail
from cli.render import console, err_console, print_json, table, usd
from store.names import ACTIVE_STATUSES, TERMINAL_STATUSES
from switchyard.errors import InputError, NotFound
from switchyard.vocabulary import KINDS

if TYPE_CHECKING:
    from tasks import actions
    from tasks.context import Context

tasks_app = typer.Typer(help="List, inspect, retry, cancel and resume tasks.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def register(app: typer.Typer) -> None:
    app.command()(submit)


def submit(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(KINDS)}")],
    env: Annotated[str, typer.Option("--env", help="Environment, e.g. dev1.")],
    stage: Annotated[str, typer.Option("--stage", help="Stage of the environment, e.g. dev or qa.")] = "dev",
    title: Annotated[str, typer.Option("--title", help="Short title, shown in `tasks list`.")] = "",
    description: Annotated[str, typer.Option("--description", help="The work in detail, given to the agent.")] = "",
    branch: Annotated[str | None, typer.Option("--branch", help="Branch to review or merge.")] = None,
    goal: Annotated[str | None, typer.Option("--goal", help="What a plan should achieve.")] = None,
    depends_on: Annotated[
        list[str] | None, typer.Option("--depends-on", help="Run after this task succeeded (repeatable; id or prefix).")
    ] = None,
    no_pipeline: Annotated[
        bool, typer.Option("--no-pipeline", help="pr_impl only: do not review and integrate it afterwards.")
    ] = False,
    deadline: Annotated[
        int | None, typer.Option("--deadline", help="Seconds it may wait for a provider or budget.")
    ] = None,
    avoid: Annotated[list[str] | None, typer.Option("--avoid", help="A provider not to use (repeatable).")] = None,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Wait until the whole chain ended (review, integration, a plan's sub-tasks)."),
    ] = False,
    wait_task: Annotated[
        bool, typer.Option("--wait-task", help="Wait only for the submitted task's own terminal status.")
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait with --wait or --wait-task.")] = 1800.0,
    as_json: JsonOpt = False,
) -> None:
    """Submit one task to its group's queue."""
    from tasks.submit import submit as submit_task

    ctx = db_context()
    request: dict[str, Any] = {
        "kind": kind,
        "environment": env,
        "stage": stage,
        "title": title,
        "description": description,
        "branch": branch,
        "goal": goal,
        "depends_on": resolve_ids(ctx, depends_on or []) or None,
        "pipeline": False if no_pipeline else None,
        "deadline_s": deadline,
        "avoid_providers": avoid or None,
    }
    task_id = submit_task({k: v for k, v in request.items() if v not in (None, "")}, context=ctx)
    if wait and not wait_task:
        report_chain(ctx, task_id, timeout, as_json=as_json)
        return
    if not wait_task:
        print_json({"id": task_id}) if as_json else console.print(task_id)
        return
    detail = wait_for(ctx, task_id, timeout)
    if detail["status"] not in TERMINAL_STATUSES:
        err_console.print(f"timed out after {timeout:g}s; task {task_id} is still {detail['status']}")
    if as_json:
        print_json(detail)
    else:
        show_detail(detail)
    if detail["status"] != "succeeded":
        raise typer.Exit(1)


def report_chain(ctx: Context, task_id: str, timeout: float, *, as_json: bool, done: str = "submitted") -> None:
    """Wait for ``task_id``'s chain to end and print it link by link; exit 1 unless it landed or succeeded."""
    err_console.print(f"{done} {task_id}; waiting for its chain (review, integration, sub-tasks) to end")
    chain_links, end = wait_for_chain(ctx, task_id, timeout)
    if not end["complete"]:
        err_console.print(f"timed out after {timeout:g}s; the chain of {task_id} is still running")
    if as_json:
        print_json({"id": task_id, **end, "links": chain_links})
    else:
        for link in chain_links:
            indent = "  " * link["depth"]
            merged = f" → {link['merge_target']} {link['merge_sha'][:10]}" if link["merge_sha"] else ""
            console.print(
                f"{indent}{link['kind']} {link['id'][:8]} [bold]{link['status']}[/bold]"
                f" {link['provider'] or ''}{merged}: {link['summary'][:160]}",
                highlight=False,
            )
        console.print(f"[bold]{end['outcome']}[/bold]: {end['why']}", highlight=False)
    if not (end["complete"] and end["ok"]):
        raise typer.Exit(1)


def wait_for_chain(ctx: Context, task_id: str, timeout: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from store.chains import chain_end, links
    from store.db import session_scope
    from store.models import Task

    deadline = time.monotonic() + timeout
    while True:
        with session_scope(ctx.database_url) as session:
            task = session.get(Task, task_id)
            if task is None:
                raise NotFound(f"task {task_id} does not exist")
            chain_links = links(session, task)
        end = chain_end(chain_links)
        if end["complete"] or time.monotonic() > deadline:
            return chain_links, end
        time.sleep(1.0)


def resolve_ids(ctx: Context, refs: list[str]) -> list[str]:
    """Full task ids for ids or prefixes, as ``tasks show`` takes them."""
    from store.db import session_scope
    from store.queries import resolve_task_id
    from tasks.send import prepare_database

    prepare_database(ctx.database_url)
    found = []
    with session_scope(ctx.database_url) as session:
        for ref in refs:
            try:
                full = resolve_task_id(session, ref)
            except ValueError as exc:
                raise InputError(f"--depends-on: {exc}") from None
            if full is None:  # repr: an escape typed by mistake is shown, not sent to the terminal
                raise NotFound(f"--depends-on {ref!r}: no such task; list tasks with: switchyard tasks list")
            found.append(full)
    return found


def wait_for(ctx: Context, task_id: str, timeout: float) -> dict[str, Any]:
    from store.db import session_scope
    from store.queries import task_detail

    deadline = time.monotonic() + timeout
    while True:
        with session_scope(ctx.database_url) as session:
            detail = task_detail(session, task_id)
        if detail is None:
            raise NotFound(f"task {task_id} does not exist")
        if detail["status"] in TERMINAL_STATUSES or time.monotonic() > deadline:
            return detail
        time.sleep(0.5)


@tasks_app.command("list")
def tasks_list(
    env: Annotated[str | None, typer.Option("--env", help="Only this environment, e.g. dev1.")] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help=f"Only this status: {', '.join((*ACTIVE_STATUSES, *TERMINAL_STATUSES))}."),
    ] = None,
    kind: Annotated[str | None, typer.Option("--kind", help=f"Only this kind: {', '.join(KINDS)}.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many tasks.")] = 200,
    as_json: JsonOpt = False,
) -> None:
    """Tasks, newest first."""
    from store.db import session_scope
    from store.queries import list_tasks

    ctx = db_context()
    check_filters(ctx, env=env, status=status, kind=kind)
    with session_scope(ctx.database_url) as session:
        rows = list_tasks(session, environment=env, status=status, kind=kind, limit=limit)
    if as_json:
        print_json(rows)
        return
    cols = ("id", "kind", "env", "stage", "status", "provider", "cost", "title")
    console.print(
        table(
            f"Tasks ({len(rows)})",
            cols,
            (
                (
                    r["id"][:8],
                    r["kind"],
                    r["environment"],
                    r["stage"],
                    r["status"],
                    r["provider"],
                    usd(r["cost_usd"]),
                    r["title"][:60],
                )
                for r in rows
            ),
        )
    )


@tasks_app.command("show")
def tasks_show(
    task_id: Annotated[str, typer.Argument(help="The task's id or its first characters.")], as_json: JsonOpt = False
) -> None:
    """One task with its attempts, results, reviews, merges and the chain it belongs to."""
    from store.db import session_scope
    from store.queries import resolve_task_id, task_detail

    ctx = db_context()
    with session_scope(ctx.database_url) as session:
        try:
            full_id = resolve_task_id(session, task_id)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        detail = task_detail(session, full_id) if full_id else None
    if detail is None:
        raise NotFound(f"task {task_id} does not exist; list tasks with: switchyard tasks list")
    print_json(detail) if as_json else show_detail(detail)


def check_filters(ctx: Context, *, env: str | None, status: str | None, kind: str | None) -> None:
    """A filter naming something that cannot exist is a mistake, not an empty result."""
    known = {
        "--env": (env, ctx.fleet.environments.names),
        "--status": (status, [*ACTIVE_STATUSES, *TERMINAL_STATUSES]),
        "--kind": (kind, list(KINDS)),
    }
    for option, (value, allowed) in known.items():
        if value is not None and value not in allowed:
            raise InputError(f"{option} {value!r} is not one of: {', '.join(allowed)}")


def _full_id(ctx: Context, ref: str) -> str:
    from store.db import session_scope
    from store.queries import resolve_task_id

    with session_scope(ctx.database_url) as session:
        try:
            full = resolve_task_id(session, ref)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    if full is None:
        raise NotFound(f"task {ref!r} does not exist; list tasks with: switchyard tasks list")
    return full


def _print_done(done: list[actions.Done], as_json: bool) -> None:
    if as_json:
        print_json([dataclasses.asdict(d) for d in done])
        return
    for d in done:
        note = f" ({d.note})" if d.note else ""
        console.print(f"{d.task_id} {d.action}: {d.from_status} -> {d.status}{note}", markup=False, highlight=False)


WaitOpt = Annotated[
    bool, typer.Option("--wait", help="Then wait for the task's chain to end and print it, as `submit --wait` does.")
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait with --wait.")]


def _then_wait(ctx: Context, done: list[actions.Done], timeout: float, as_json: bool) -> None:
    """``--wait`` of retry and resume: each acted-on task's chain, as ``submit --wait`` prints it."""
    if not as_json:
        _print_done(done, as_json)
    for d in done:
        report_chain(ctx, d.task_id, timeout, as_json=as_json, done=d.action)


@tasks_app.command("retry")
def tasks_retry(
    task_id: Annotated[str, typer.Argument(help="A task that ended without success: its id or first characters.")],
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 1800.0,
    as_json: JsonOpt = False,
) -> None:
    """Run a task that ended without success again; when it succeeds its pipeline goes on. Charges already
    made stay and are not made again (new attempts take the next numbers)."""
    from tasks import actions

    ctx = db_context()
    done = [actions.retry(ctx, _full_id(ctx, task_id))]
    if wait:
        _then_wait(ctx, done, timeout, as_json)
    else:
        _print_done(done, as_json)


@tasks_app.command("cancel")
def tasks_cancel(
    task_id: Annotated[str, typer.Argument(help="A queued, deferred or running task: its id or first characters.")],
    as_json: JsonOpt = False,
) -> None:
    """End a queued, deferred or running task as cancelled: it is not run (a run in progress stops at its next
    look), the holds of calls not in progress are released, and its worktree is kept."""
    from tasks import actions

    ctx = db_context()
    _print_done([actions.cancel(ctx, _full_id(ctx, task_id))], as_json)


@tasks_app.command("resume")
def tasks_resume(
    task_id: Annotated[str, typer.Argument(help="Any task of the stopped pipeline or plan: id or first characters.")],
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 1800.0,
    as_json: JsonOpt = False,
) -> None:
    """Carry on a stopped pipeline: retry every task in it that ended without success with nothing after it,
    and make the follow-ups a succeeded task never got."""
    from tasks import actions

    ctx = db_context()
    done = actions.resume(ctx, _full_id(ctx, task_id))
    if wait:
        _then_wait(ctx, done, timeout, as_json)
    else:
        _print_done(done, as_json)
