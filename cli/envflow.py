"""The git workflow on environments: ``switchyard env status|sync|feature|commit|push|pull|log|clean|diff|
rebase|reset [ENV]... [--all]``.

Which environments: the ones named, or ``--all``. The read-only commands (status, log, diff) run on every
environment when none is named, like the seed's script; the commands that change something need names or
``--all``, so a forgotten argument never touches five working copies. An unknown name stops the command
before anything runs, with the list of known ones.

The destructive commands (clean, rebase, reset) show what they will do and how to undo it, then ask; with
stdin not a terminal they refuse unless ``--yes``. Exit code 1 when a command was refused or failed in any
environment (each environment's line says why); 2 for bad input; 3 when the database does not answer.
"""

from __future__ import annotations

import sys
from datetime import date
from functools import partial
from typing import Annotated

import typer
from rich.markup import escape

from cli.context import cli_context
from cli.envargs import AllOpt, EnvArgs, JsonOpt, WorkspaceOpt, chosen, finish, outcomes_for, report, workspace_for
from cli.render import console, print_json, table
from switchyard.errors import InputError


def status(
    names: EnvArgs = None, every: AllOpt = False, workspace: WorkspaceOpt = None, as_json: JsonOpt = False
) -> None:
    """Branch, ahead/behind its base, and uncommitted files (all environments when none is named)."""
    from environments import workflow

    outcomes = outcomes_for("status", names, every, workspace, workflow.status, writes=False)
    if as_json:
        print_json([outcome.as_dict() for outcome in outcomes])
        return finish(outcomes)
    columns = ("env", "branch", "ahead", "behind", "base", "uncommitted")
    rows = [
        (o.environment, o.details["branch"] or "(detached)", o.details["ahead"], o.details["behind"],
         o.details["base"], len(o.details["dirty"]))
        if o.ok
        else (o.environment, f"[red]{escape(o.message)}[/red]", "", "", "", "")
        for o in outcomes
    ]  # fmt: skip
    console.print(table("Environments", columns, rows))
    return finish(outcomes)


def sync(
    names: EnvArgs = None, every: AllOpt = False, workspace: WorkspaceOpt = None, as_json: JsonOpt = False
) -> None:
    """Fetch origin and fast-forward env/<name> to origin's base branch; refuses when they have diverged."""
    from environments import upstream, workflow

    root = workspace_for(workspace)
    infos = chosen("sync", root, names, every, writes=True)
    upstream.fetch_origin(root)  # once, for every environment
    report("sync", workflow.run_each("sync", infos, lambda info: upstream.sync(root, info, fetch=False)), as_json)


def feature(
    args: Annotated[list[str], typer.Argument(metavar="[ENV]... NAME", help="Environments, then the feature name.")],
    every: AllOpt = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create and switch to feature/<env>/<YYYYMMDD>-<NAME>, starting at env/<env>."""
    from environments import workflow

    if len(args) == 1 and not every:
        raise InputError(f"name the environments, then the feature: e.g. {feature_example(args[0])}")
    name, today = args[-1], date.today()
    root = workspace_for(workspace)
    infos = chosen("feature", root, args[:-1], every, writes=True)
    for info in infos:  # a bad name stops the command before any environment changes
        workflow.feature_branch_name(info.name, name, today)
    outcomes = workflow.run_each("feature", infos, lambda info: workflow.feature(root, info, name=name, today=today))
    report("feature", outcomes, as_json)


def feature_example(word: str) -> str:
    """The one word given is an environment or the feature's name: the example keeps it and adds the other."""
    names = cli_context().fleet.environments.names
    if word in names:
        return f"switchyard env feature {word} login-form"
    return f"switchyard env feature {names[0]} {word}"


def commit(
    names: EnvArgs = None,
    message: Annotated[str, typer.Option("--message", "-m", help="The commit message.")] = "",
    every: AllOpt = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Commit every change (new, changed and deleted files); refuses when there is nothing to commit."""
    from environments import workflow

    if not message.strip():
        raise InputError("the commit message is empty; pass -m 'what changed'")
    action = partial(workflow.commit, message=message)
    report("commit", outcomes_for("commit", names, every, workspace, action, writes=True), as_json)


def push(
    names: EnvArgs = None, every: AllOpt = False, workspace: WorkspaceOpt = None, as_json: JsonOpt = False
) -> None:
    """Push the checked-out branch to origin (the source repository) under the same name."""
    from environments import upstream

    report("push", outcomes_for("push", names, every, workspace, upstream.push, writes=True), as_json)


def pull(
    names: EnvArgs = None, every: AllOpt = False, workspace: WorkspaceOpt = None, as_json: JsonOpt = False
) -> None:
    """Fetch origin and fast-forward the checked-out branch to origin's branch of the same name."""
    from environments import upstream

    report("pull", outcomes_for("pull", names, every, workspace, upstream.pull, writes=True), as_json)


def log(
    names: EnvArgs = None,
    count: Annotated[int, typer.Option("-n", help="How many commits.")] = 10,
    every: AllOpt = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The last commits of the checked-out branch (all environments when none is named)."""
    from environments import workflow

    workflow.check_count(count)
    outcomes = outcomes_for("log", names, every, workspace, partial(workflow.log, count=count), writes=False)
    if as_json:
        print_json([outcome.as_dict() for outcome in outcomes])
        return finish(outcomes)
    for o in outcomes:
        rows = ((c["sha"][:12], c["date"][:19], c["author"], c["subject"]) for c in o.details.get("commits", []))
        console.print(table(f"{o.environment}: {escape(o.message)}", ("commit", "date", "author", "subject"), rows))
    return finish(outcomes)


def diff(
    names: EnvArgs = None,
    stat: Annotated[bool, typer.Option("--stat", help="Only the summary of changed files.")] = False,
    uncommitted: Annotated[
        bool, typer.Option("--uncommitted", help="Only the changes not committed yet (against HEAD).")
    ] = False,
    every: AllOpt = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Changes against the environment's base (origin's base branch for env/<env>, env/<env> for a feature
    branch): its commits and uncommitted changes; --uncommitted for those alone (all environments when none
    is named)."""
    from environments import workflow

    work = partial(workflow.diff, stat=stat, uncommitted=uncommitted)
    outcomes = outcomes_for("diff", names, every, workspace, work, writes=False)
    if as_json:
        print_json([outcome.as_dict() for outcome in outcomes])
        return finish(outcomes)
    for o in outcomes:
        console.print(f"[bold]{o.environment}[/bold]: {escape(o.message)}")
        sys.stdout.write(o.details.get("text", ""))
        for name in o.details.get("untracked", []):
            console.print(f"  untracked: {name}", markup=False)
    return finish(outcomes)
