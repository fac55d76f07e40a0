"""``switchyard demo``: the whole fleet on embedded defaults, with the provider simulator.

Starts the embedded broker, one worker per group, Flower, the status API and the simulator; generates a
sample repository and the environments; submits a batch covering every kind in every environment; shows a
progress bar; prints results per environment and costs per provider and group; stops what it started.
The demo never uses real provider keys: every call goes to the simulator.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from environments.git import git_ok
from environments.sample import make_sample_repo
from store.costs import costs
from store.db import session_scope
from store.models import TERMINAL_STATUSES, Environment, Task
from store.queries import list_tasks
from switchyard.cli.context import cli_context
from switchyard.cli.envs import init_environments
from switchyard.cli.render import console, table, usd
from switchyard.errors import InputError, ServiceUnavailable
from tasks.context import Context, build_context
from tasks.submit import prepare_database

PROVIDER_KEYS = (
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "OLLAMA_HOST",
    "ANTHROPIC_BASE_URL",
    "OPENAI_BASE_URL",
)


def register(app: typer.Typer) -> None:
    app.command()(demo)


def demo(
    keep_running: Annotated[bool, typer.Option("--keep-running", help="Leave the fleet up (open Flower).")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the batch.")] = 150.0,
) -> None:
    """Run the whole fleet on the simulator with a batch of tasks in every environment, then stop it."""
    from workers import launcher

    ctx = simulated_only(cli_context(simulate=True))
    refuse_real_environments(ctx)
    started = datetime.now(UTC) - timedelta(seconds=1)
    console.print(f"[bold]Switchyard demo[/bold] — data in {ctx.settings.data_dir}")
    launcher.up(ctx.settings, ctx.fleet, simulate=True, on_event=console.print)
    ok = False
    try:
        sample = sample_repo(ctx)
        init_environments(ctx, str(sample), demo_dir(ctx) / "workspace", None)
        ids = submit_batch(ctx)
        ok = follow(ctx, ids, timeout)
        report(ctx, set(tracked(ctx, ids)), started)
    finally:
        if keep_running:
            s = ctx.settings
            console.print(
                f"Fleet left running: Flower http://{s.host}:{s.flower_port}, "
                f"status API http://{s.host}:{s.api_port}. Stop it with: switchyard down"
            )
        else:
            launcher.down(ctx.settings, on_event=console.print)
    if not ok:
        raise typer.Exit(1)


def simulated_only(ctx: Context) -> Context:
    """The context without provider keys or addresses: the demo, and its workers, never reach a real provider."""
    none = dict.fromkeys(
        ("anthropic_api_key", "openai_api_key", "anthropic_base_url", "openai_base_url", "ollama_host")
    )
    return build_context(ctx.settings.model_copy(update=none))


def demo_dir(ctx: Context) -> Path:
    """The demo's own sample repository and workspace, apart from the user's workspace."""
    return ctx.settings.data_dir / "demo"


def refuse_real_environments(ctx: Context) -> None:
    """The demo re-points dev1..dev5 at its sample repository: never over environments a user set up."""
    prepare_database(ctx.database_url)
    sample = str((demo_dir(ctx) / "sample-repo").resolve())
    with session_scope(ctx.database_url) as session:
        theirs = [e.name for e in session.query(Environment) if e.repository != sample]
    if theirs:
        raise InputError(
            f"this data directory ({ctx.settings.data_dir}) has environments of your own ({', '.join(theirs)}); "
            "run the demo with another home, e.g. SWITCHYARD_HOME=$(mktemp -d) switchyard demo"
        )


def sample_repo(ctx: Context) -> Path:
    """The demo's sample repository: made on the first run, reused (with its branches) on later ones."""
    path = demo_dir(ctx) / "sample-repo"
    if path.exists() and git_ok(["rev-parse", "--verify", "--quiet", "feature/sample-10"], cwd=path):
        return path
    return make_sample_repo(path, feature_branches=10)


def batch(ctx: Context) -> list[dict[str, Any]]:
    """Five tasks per environment: one of every kind."""
    requests: list[dict[str, Any]] = []
    for i, env in enumerate(ctx.fleet.environments.names, start=1):
        requests += [
            {"kind": "plan", "environment": env, "goal": f"Add a health endpoint to the {env} service"},
            {"kind": "dev_task", "environment": env, "title": f"Write release notes for {env}"},
            {
                "kind": "pr_impl",
                "environment": env,
                "title": f"Add a greeting for {env}",
                "description": "Add a short module that greets the environment by name.",
            },
            {
                "kind": "pr_review",
                "environment": env,
                "branch": f"feature/sample-{i}",
                "title": f"Review sample {i}",
            },
            {
                "kind": "pr_integ",
                "environment": env,
                "branch": f"feature/sample-{i + 5}",
                "title": f"Integrate sample {i + 5}",
            },
        ]
    return requests


def submit_batch(ctx: Context) -> list[str]:
    from tasks.submit import submit

    return [submit(request, context=ctx) for request in batch(ctx)]


def tracked(ctx: Context, ids: list[str]) -> dict[str, str]:
    """Status of the submitted tasks and of every child they enqueued."""
    with session_scope(ctx.database_url) as session:
        rows = session.query(Task.id, Task.status).filter(Task.id.in_(ids) | Task.parent_id.in_(ids)).all()
    return {row.id: row.status for row in rows}


def follow(ctx: Context, ids: list[str], timeout: float) -> bool:
    """A progress bar until every tracked task is terminal; True when all succeeded."""
    deadline = time.monotonic() + timeout
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("tasks", total=len(ids))
        while True:
            states = tracked(ctx, ids)
            done = sum(1 for s in states.values() if s in TERMINAL_STATUSES)
            progress.update(bar, total=len(states), completed=done)
            if done == len(states):
                break
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"only {done} of {len(states)} tasks finished in {timeout:.0f}s; "
                    "see the workers' logs under the data directory's logs/"
                )
            time.sleep(0.5)
    failed = {i: s for i, s in states.items() if s != "succeeded"}
    children = len(states) - len(ids)
    console.print(
        f"{len(ids)} tasks submitted, {children} sub-tasks enqueued by the plans: "
        + ("all succeeded" if not failed else f"{len(failed)} did not succeed: {sorted(set(failed.values()))}")
    )
    return not failed


def results_table(ctx: Context, rows: list[dict[str, Any]]) -> Table:
    """One row per environment: each kind's status and provider, sub-tasks, and the environment's cost."""
    kinds = ("plan", "dev_task", "pr_impl", "pr_review", "pr_integ")
    out = Table(title="Results per environment", title_justify="left")
    for column in ("env", *kinds, "sub-tasks", "cost"):
        out.add_column(column)
    for env in ctx.fleet.environments.names:
        mine = [r for r in rows if r["environment"] == env]
        top = {r["kind"]: r for r in mine if r["parent_id"] is None}
        children = [r for r in mine if r["parent_id"] is not None]
        cells = [cell(top.get(kind)) for kind in kinds]
        done = sum(1 for r in children if r["status"] == "succeeded")
        cost = sum(r["cost_usd"] for r in mine)
        out.add_row(env, *cells, f"{done}/{len(children)} ok", usd(cost))
    return out


def cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    mark = "[green]ok[/green]" if row["status"] == "succeeded" else f"[red]{row['status']}[/red]"
    return f"{mark} {row['provider'] or ''}"


def report(ctx: Context, ids: set[str], since: datetime) -> None:
    with session_scope(ctx.database_url) as session:
        rows = [r for r in list_tasks(session, limit=10_000) if r["id"] in ids]
        spend = costs(session, since=since)
    console.print(results_table(ctx, rows))
    console.print(
        table(
            "Cost per provider",
            ("provider", "calls", "tokens in", "cached", "tokens out", "compute s", "cost"),
            (
                (
                    p["provider"],
                    p["calls"],
                    p["input_tokens"],
                    p["cached_input_tokens"],
                    p["output_tokens"],
                    f"{p['compute_seconds']:.1f}",
                    usd(p["cost_usd"]),
                )
                for p in spend["providers"]
            ),
        )
    )
    console.print(
        table(
            "Cost per group",
            ("group", "charges", "cost"),
            ((g["group"], g["charges"], usd(g["cost_usd"])) for g in spend["groups"]),
        )
    )
    console.print(
        f"Total: {usd(spend['total']['cost_usd'])} (simulated calls at the fleet file's list prices; "
        "Ollama is free and its compute seconds are the model time it reports, summed over calls)"
    )
    console.print(
        "Next: `switchyard demo --keep-running`, then open Flower at "
        f"http://{ctx.settings.host}:{ctx.settings.flower_port} and the dashboard at "
        f"http://{ctx.settings.host}:{ctx.settings.api_port}; `switchyard tasks list`, `switchyard down`."
    )
