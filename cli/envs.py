"""Environments: ``env init``, ``env list``, ``env promote``, ``env clean-tasks``, and the git workflow
commands of :mod:`cli.envflow`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli import envflow, envrewrite
from cli.context import cli_context
from cli.envargs import EnvArgs, JsonOpt, WorkspaceOpt, YesOpt, workspace_for
from cli.ops import prepare
from cli.render import console, err_console, print_json, table
from switchyard.errors import InputError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from environments.checks import CheckResult
    from environments.leftovers import Leftover
    from environments.workspace import EnvironmentInfo, WorkspaceReport
    from tasks.context import Context

env_app = typer.Typer(help="Environments (git working copies) and their stages.", no_args_is_help=True)


def init_environments(
    ctx: Context, repository: str, workspace: Path | None, names: list[str] | None, *, check: str | None = None
) -> list[EnvironmentInfo]:
    """Create or repair the environments' working copies and record them in SQL."""
    return init_report(ctx, repository, workspace, names, check=check).environments


def init_report(
    ctx: Context, repository: str, workspace: Path | None, names: list[str] | None, *, check: str | None = None
) -> WorkspaceReport:
    """:func:`init_environments`, saying what was created or repaired (working copies, branches, SQL rows)."""
    from environments.checks import parse_check_command
    from environments.workspace import ensure_workspace
    from environments.workspace import record as record_environment
    from store.db import session_scope

    fleet = ctx.fleet.environments
    chosen = names or fleet.names
    unknown = [n for n in chosen if n not in fleet.names]
    if unknown:
        raise InputError(f"unknown environments {unknown}; the fleet file defines {fleet.names}")
    root = (workspace or ctx.settings.workspace_dir).resolve()
    if check is not None:
        parse_check_command(check)  # refused before anything is made (exit 2), not at the first integration
    report = ensure_workspace(
        repository,
        root,
        chosen,
        fleet.stages,
        base_port=fleet.base_port,
        check_command=check if check is not None else fleet.check_command,
        ports={name: fleet.port_for(name) for name in chosen},
        replace_check=check is not None,
    )
    prepare(ctx)
    with session_scope(ctx.database_url) as session:
        for info in report.environments:
            if info.name in chosen and not _recorded(session, info):
                report.changes.append(f"{info.name}: recorded in SQL (port {info.port}, check {info.check_command!r})")
                record_environment(session, info)
    return report


def _recorded(session: Session, info: EnvironmentInfo) -> bool:
    """True when the environment's SQL rows already say what ``info`` says (then they are left alone)."""
    from store.models import Environment, Stage

    row = session.get(Environment, info.name)
    if row is None:
        return False
    stages = session.query(Stage).filter(Stage.environment == info.name).order_by(Stage.position)
    current = (row.path, row.branch, row.port, row.check_command, row.repository, [(s.name, s.branch) for s in stages])
    return current == (str(info.path), info.branch, info.port, info.check_command, info.repository, info.stages)


@env_app.command("init")
def env_init(
    repository: Annotated[str, typer.Option("--repo", help="Path or URL of the target repository.")],
    workspace: Annotated[Path | None, typer.Option("--workspace", help="Where the working copies go.")] = None,
    envs: Annotated[str | None, typer.Option("--envs", help="Comma-separated subset, e.g. dev1,dev2.")] = None,
    check: Annotated[
        str | None, typer.Option("--check", help="Check command for these environments, e.g. 'make test'.")
    ] = None,
    no_check_run: Annotated[
        bool, typer.Option("--no-check-run", help="Do not run the check command once on the new environments.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create or repair one working copy per environment on env/<name>, its stage branches and SQL rows, then
    run the check command once on the environments' tip (as an integration would) and say how it went.

    Running it again recreates what is missing and leaves the rest alone (local commits and changes too)."""
    ctx = cli_context()
    names = [n.strip() for n in envs.split(",") if n.strip()] if envs else None
    report = init_report(ctx, repository, workspace, names, check=check)
    chosen = [info for info in report.environments if names is None or info.name in names]
    root = (workspace or ctx.settings.workspace_dir).resolve()
    checks = [] if no_check_run else run_checks_once(ctx, root, chosen)
    if as_json:
        print_json(
            {
                "environments": [_info_dict(info) for info in report.environments],
                "changes": report.changes,
                "kept": report.kept,
                "checks": [{"environments": envs, "branch": branch, **r.as_dict()} for envs, branch, r in checks],
            }
        )
    else:
        _print_init(report)
        _print_checks(checks)
    if any(not result.passed for _, _, result in checks):
        raise typer.Exit(1)


def run_checks_once(
    ctx: Context, workspace: Path, infos: list[EnvironmentInfo]
) -> list[tuple[list[str], str, CheckResult]]:
    """Each distinct check command, run once on the tip of the first environment that has it."""
    from environments.promote import check_at

    by_command: dict[str, list[EnvironmentInfo]] = {}
    for info in infos:
        by_command.setdefault(info.check_command, []).append(info)
    timeout = ctx.fleet.kind("pr_integ").check_timeout_s
    done = []
    for command, group in by_command.items():
        err_console.print(f"running the check {command!r} on {group[0].branch} ...", markup=False, highlight=False)
        result = check_at(workspace, group[0].branch, command, timeout_s=timeout)
        done.append(([info.name for info in group], group[0].branch, result))
    return done


def _print_checks(checks: list[tuple[list[str], str, CheckResult]]) -> None:
    for envs, branch, result in checks:
        verdict = "passed" if result.passed else f"FAILED (exit {result.exit_code})"
        console.print(
            f"check {result.command!r} on {branch} ({', '.join(envs)}): {verdict} in {result.duration_s:.1f}s",
            markup=False,
            highlight=False,
        )
        if not result.passed:
            sys.stdout.write(result.output[-2000:] + "\n")
            err_console.print(
                "the environments are ready, but their check fails there: fix the repository or the command "
                "(env init --check '...'); --no-check-run skips this run",
                markup=False,
                highlight=False,
            )


def _print_init(report: WorkspaceReport) -> None:
    for info in report.environments:
        console.print(f"{info.name}: {info.path} on {info.branch} (port {info.port}, check {info.check_command!r})")
    for line in report.changes:
        console.print(f"  made: {line}")
    for line in report.kept:
        console.print(f"  kept: {line}")
    if not report.changes:
        console.print("Nothing was missing; nothing changed.")


def _info_dict(info: EnvironmentInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "path": str(info.path),
        "branch": info.branch,
        "port": info.port,
        "check_command": info.check_command,
        "repository": info.repository,
        "stages": [{"stage": stage, "branch": branch} for stage, branch in info.stages],
    }


@env_app.command("list")
def env_list(as_json: JsonOpt = False) -> None:
    """The environments recorded in SQL."""
    from store.db import session_scope
    from store.models import Environment

    ctx = cli_context()
    prepare(ctx)
    with session_scope(ctx.database_url) as session:
        rows = [
            {
                "name": e.name,
                "path": e.path,
                "branch": e.branch,
                "port": e.port,
                "repository": e.repository,
                "check_command": e.check_command,
            }
            for e in session.query(Environment).order_by(Environment.name)
        ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No environments yet. Create them with: switchyard env init --repo PATH")
        return
    console.print(
        table(
            "Environments",
            ("name", "branch", "port", "check", "path"),
            ((r["name"], r["branch"], r["port"], r["check_command"], r["path"]) for r in rows),
        )
    )


@env_app.command("promote")
def env_promote(
    environment: Annotated[str, typer.Argument(help="The environment, e.g. dev1.")],
    to: Annotated[str, typer.Option("--to", help="The stage to promote to: qa (from dev) or staging (from qa).")],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the environment's check on the previous stage's tip; fast-forward the --to stage only if it passes."""
    from environments.promote import promote

    ctx = cli_context()
    root = workspace_for(workspace)
    result = promote(root, environment, to, database_url=ctx.database_url)
    if as_json:
        print_json(result.as_dict())
    else:
        colour = "green" if result.ok else "red"
        console.print(f"{environment}: {result.source_branch} -> {result.target_branch}: [{colour}]{result.status}[/]")
        console.print(f"  {result.reason}", markup=False, highlight=False)
        if result.check is not None and not result.check.passed:
            console.print("  check output (tail):", markup=False)
            sys.stdout.write(result.check.output[-2000:] + "\n")
    if not result.ok:
        raise typer.Exit(1)


ListOpt = Annotated[bool, typer.Option("--list", help="Only list the kept task worktrees; remove nothing.")]


@env_app.command("clean-tasks")
def env_clean_tasks(
    envs: EnvArgs = None,
    yes: YesOpt = False,
    list_only: ListOpt = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove the worktrees failed tasks left under .tasks/ for inspection (of the environments named, or all),
    then delete the task/* branches no task needs any more (merged, or their task cancelled)."""
    from environments.branches import sweep_task_branches
    from environments.leftovers import find_leftovers, remove_leftovers
    from environments.workflow import select_environments

    ctx = cli_context()
    root = workspace_for(workspace)
    select_environments(root, envs or [])  # validates the names
    found = find_leftovers(root, database_url=ctx.database_url, environments=envs or [])
    if list_only:
        _list_leftovers(found, as_json)
        return
    for item in found:
        what = "skipped: the task is still " + str(item.status) if item.active else "would remove"
        err_console.print(
            f"{what}: {item.path} ({item.environment or '?'}, {item.status or 'no task row'})",
            markup=False,
            highlight=False,
        )
    removable = [item for item in found if not item.active]
    if removable:
        envrewrite.confirm("clean-tasks", f"({len(removable)} task worktree(s))", yes)
    removed = remove_leftovers(root, removable) if removable else []
    swept = sweep_task_branches(root, database_url=ctx.database_url, environments=envs or [])
    if as_json:
        print_json(
            {
                "removed": [item.as_dict() for item in removed],
                "skipped": [item.as_dict() for item in found if item.active],
                "branches": swept.as_dict(),
            }
        )
        return
    console.print(
        f"Removed {len(removed)} task worktree(s); their branches are kept while their work is not merged."
        if removed
        else "No task worktrees to remove."
    )
    if swept.deleted:
        console.print(f"Deleted {len(swept.deleted)} branch(es) of finished tasks: {', '.join(swept.deleted)}")


def _list_leftovers(found: list[Leftover], as_json: bool) -> None:
    if as_json:
        print_json({"worktrees": [item.as_dict() for item in found]})
        return
    rows = [(i.task_id, i.environment or "?", i.status or "no task row", i.branch or "detached", i.path) for i in found]
    console.print(table("Task worktrees kept for inspection", ["task", "env", "status", "branch", "path"], rows))
    if not found:
        console.print("No task worktrees are kept.")


def _register_workflow(app: typer.Typer) -> None:
    """The git workflow commands, ``env status`` .. ``env reset``."""
    for name, command in (
        ("status", envflow.status), ("sync", envflow.sync), ("feature", envflow.feature),
        ("commit", envflow.commit), ("push", envflow.push), ("pull", envflow.pull), ("log", envflow.log),
        ("diff", envflow.diff), ("clean", envrewrite.clean), ("rebase", envrewrite.rebase),
        ("reset", envrewrite.reset),
    ):  # fmt: skip
        app.command(name)(command)


_register_workflow(env_app)
