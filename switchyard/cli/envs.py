"""Environments: ``env init`` and ``env list``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from environments.workspace import EnvironmentInfo, init_workspace
from store import repo
from store.db import session_scope
from store.models import Environment
from switchyard.cli.context import cli_context
from switchyard.cli.ops import prepare
from switchyard.cli.render import console, print_json, table
from switchyard.errors import InputError
from tasks.context import Context

env_app = typer.Typer(help="Environments (git working copies) and their stages.", no_args_is_help=True)


def init_environments(
    ctx: Context, repository: str, workspace: Path | None, names: list[str] | None
) -> list[EnvironmentInfo]:
    """Create or repair the environments' working copies and record them in SQL."""
    fleet = ctx.fleet.environments
    chosen = names or fleet.names
    unknown = [n for n in chosen if n not in fleet.names]
    if unknown:
        raise InputError(f"unknown environments {unknown}; the fleet file defines {fleet.names}")
    root = (workspace or ctx.settings.workspace_dir).resolve()
    infos = init_workspace(
        repository, root, chosen, fleet.stages, base_port=fleet.base_port, check_command=fleet.check_command
    )
    prepare(ctx)
    with session_scope(ctx.database_url) as session:
        for info in infos:
            repo.upsert_environment(
                session,
                name=info.name,
                path=str(info.path),
                branch=info.branch,
                port=info.port,
                check_command=info.check_command,
                repository=info.repository,
                stages=list(info.stages),
            )
    return infos


@env_app.command("init")
def env_init(
    repository: Annotated[str, typer.Option("--repo", help="Path or URL of the target repository.")],
    workspace: Annotated[Path | None, typer.Option("--workspace", help="Where the working copies go.")] = None,
    envs: Annotated[str | None, typer.Option("--envs", help="Comma-separated subset, e.g. dev1,dev2.")] = None,
) -> None:
    """Create (or repair) one working copy per environment on env/<name>, with its stage branches."""
    ctx = cli_context()
    names = [n.strip() for n in envs.split(",") if n.strip()] if envs else None
    for info in init_environments(ctx, repository, workspace, names):
        console.print(f"{info.name}: {info.path} on {info.branch} (port {info.port})")


@env_app.command("list")
def env_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The environments recorded in SQL."""
    ctx = cli_context()
    prepare(ctx)
    with session_scope(ctx.database_url) as session:
        rows = [
            {"name": e.name, "path": e.path, "branch": e.branch, "port": e.port, "repository": e.repository}
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
            ("name", "branch", "port", "path"),
            ((r["name"], r["branch"], r["port"], r["path"]) for r in rows),
        )
    )
