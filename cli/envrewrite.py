"""The destructive workflow commands: ``switchyard env clean|rebase|reset [ENV]... [--all] [--yes]``.

Before anything runs, each shows per environment what it will do and how to undo it (the exact commit to
``reset --hard`` back to; for clean, the untracked files that cannot be recovered), then asks. With stdin not
a terminal (a script, CI) and no ``--yes``, it refuses. See :mod:`environments.rewrite` for the git side.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.envargs import AllOpt, EnvArgs, JsonOpt, WorkspaceOpt, YesOpt, chosen, report, workspace_for
from cli.render import err_console
from switchyard.errors import InputError

if TYPE_CHECKING:
    from environments.workflow import Outcome
    from environments.workspace import EnvironmentInfo

Hints = Callable[["EnvironmentInfo"], list[str]]  # what a destructive command will do, shown before asking


def confirm(command: str, where: str, yes: bool) -> None:
    """Ask before ``command`` runs on ``where``; with stdin not a terminal and no --yes, refuse."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise InputError(
            f"{command} is destructive and stdin is not a terminal to confirm it; pass --yes to {command} {where}"
        )
    if not typer.confirm(f"{command} {where}?", default=False):
        err_console.print("Nothing done.")
        raise typer.Exit(1)


def show_hints(infos: list[EnvironmentInfo], hints: Hints) -> None:
    for info in infos:
        for line in hints(info):
            err_console.print(f"{info.name}: {line}", markup=False, highlight=False, soft_wrap=True)


def _head_hints(info: EnvironmentInfo) -> list[str]:
    from environments import workflow
    from environments.git import rev_parse

    head = rev_parse("HEAD", cwd=workflow.require_worktree(info))
    return [f"HEAD is {head[:12]}; undo afterwards with: git -C {info.path} reset --hard {head}"]


def _clean_hints(info: EnvironmentInfo) -> list[str]:
    from environments import rewrite

    found = rewrite.preview(info)
    lines = [f"would remove (cannot be recovered): {name}" for name in found["untracked"]]
    lines += [f"would discard (saved as a stash entry first): {name}" for name in found["tracked"]]
    return lines or ["nothing to clean"]


def destructive(
    command: str,
    names: list[str] | None,
    every: bool,
    workspace: Path | None,
    yes: bool,
    as_json: bool,
    hints: Hints,
    action: Callable[[Path, EnvironmentInfo], Outcome],
) -> None:
    from environments import workflow

    root = workspace_for(workspace)
    infos = chosen(command, root, names, every, writes=True)
    show_hints(infos, hints)
    confirm(command, ", ".join(info.name for info in infos), yes)
    report(command, workflow.run_each(command, infos, lambda info: action(root, info)), as_json)


def clean(
    names: EnvArgs = None,
    every: AllOpt = False,
    yes: YesOpt = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """DESTRUCTIVE: remove untracked files and discard changes to tracked ones (those are saved as a stash entry)."""
    from environments import rewrite

    destructive("clean", names, every, workspace, yes, as_json, _clean_hints, rewrite.clean)


def rebase(
    names: EnvArgs = None,
    every: AllOpt = False,
    yes: YesOpt = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """DESTRUCTIVE: rebase the checked-out feature branch onto env/<name>; a conflict aborts it, unchanged."""
    from environments import rewrite

    destructive("rebase", names, every, workspace, yes, as_json, _head_hints, rewrite.rebase)


def reset(
    names: EnvArgs = None,
    to: Annotated[str | None, typer.Option("--to", help="Branch, tag or commit (default: env/<name>).")] = None,
    every: AllOpt = False,
    yes: YesOpt = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """DESTRUCTIVE: reset --hard the checked-out branch to env/<name> (or --to REF); uncommitted changes are
    saved as a stash entry first."""
    from environments import rewrite

    def hints(info: EnvironmentInfo) -> list[str]:
        return [f"would reset to {to or info.branch} ({rewrite.resolve_target(info, to)[:12]})", *_head_hints(info)]

    destructive(
        "reset", names, every, workspace, yes, as_json, hints, lambda root, info: rewrite.reset(root, info, to=to)
    )
