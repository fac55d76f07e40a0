"""What the environment commands share: their arguments and options, which environments a command runs on,
and how its outcomes are reported (a table, or JSON, and exit code 1 when any environment refused)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from cli.context import cli_context
from cli.ops import prepare
from cli.render import console, print_json, table
from switchyard.errors import InputError

if TYPE_CHECKING:
    from environments.workflow import Outcome
    from environments.workspace import EnvironmentInfo

EnvArgs = Annotated[list[str] | None, typer.Argument(metavar="[ENV]...", help="Environments, e.g. dev1 dev2.")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every environment of the workspace.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
WorkspaceOpt = Annotated[
    Path | None,
    typer.Option("--workspace", help="The workspace (default: the one `env init` recorded, or the settings')."),
]


def workspace_for(workspace: Path | None) -> Path:
    """--workspace; else SWITCHYARD_WORKSPACE; else where ``env init`` put the environments; else the default."""
    from store.db import session_scope
    from store.models import Environment

    ctx = cli_context()
    if workspace is not None:
        return workspace.resolve()
    if ctx.settings.workspace is not None:
        return ctx.settings.workspace_dir
    prepare(ctx)
    with session_scope(ctx.database_url) as session:
        roots = {Path(row.path).parent for row in session.query(Environment)}
    return roots.pop() if len(roots) == 1 else ctx.settings.workspace_dir


def chosen(
    command: str, workspace: Path, names: list[str] | None, every: bool, *, writes: bool
) -> list[EnvironmentInfo]:
    from environments import workflow

    if names and every:
        raise InputError("name environments or pass --all, not both")
    if not names and not every and writes:
        raise InputError(f"name the environments to {command} (e.g. dev1 dev2), or pass --all for every one")
    return workflow.select_environments(workspace, names or [])


def outcomes_for(
    command: str,
    names: list[str] | None,
    every: bool,
    workspace: Path | None,
    action: Callable[[Path, EnvironmentInfo], Outcome],
    *,
    writes: bool,
) -> list[Outcome]:
    from environments import workflow

    root = workspace_for(workspace)
    infos = chosen(command, root, names, every, writes=writes)
    return workflow.run_each(command, infos, lambda info: action(root, info))


def finish(outcomes: list[Outcome]) -> None:
    if not all(outcome.ok for outcome in outcomes):
        raise typer.Exit(1)


def report(command: str, outcomes: list[Outcome], as_json: bool) -> None:
    if as_json:
        print_json([outcome.as_dict() for outcome in outcomes])
    else:
        rows = ((o.environment, "ok" if o.ok else "[red]refused[/red]", escape(o.message)) for o in outcomes)
        console.print(table(command, ("env", "result", "message"), rows))
        for outcome in outcomes:
            if outcome.undo:
                console.print(f"{outcome.environment}: to undo: {outcome.undo}", soft_wrap=True, markup=False)
    finish(outcomes)
