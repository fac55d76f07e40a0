"""What ``switchyard demo`` runs (:mod:`cli.demo` is the command): the whole fleet on embedded defaults,
with the provider simulator.

Starts the embedded broker, one worker per group, celery beat, Flower, the status API and the simulator;
generates a sample repository and the environments dev1..dev5 (check command: the sample's `make test`).
Then, in every environment: a change goes through the whole pipeline (implement → review on another provider
→ integrate once the check passes), a plan runs its sub-tasks, a chore is done; each environment is promoted
dev → qa → staging. Last, a ladder drill: the simulator fails every Claude call while five reviews run, and
the router falls back to the next rung as the shared breaker opens. Prints results per environment, costs per
provider and group, and which tasks fell back and why; stops what it started.
The demo never uses real provider keys: every call goes to the simulator. It runs in a profile of its own,
``demo``: its database, broker and workspace live in ``<home>/demo/``, whatever ``SWITCHYARD_PROFILE``,
``SWITCHYARD_DATABASE_URL``, ``SWITCHYARD_BROKER_URL`` or ``SWITCHYARD_WORKSPACE`` say, so its tasks, spend
and budgets never mix with the user's.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli import demo_clis
from cli.context import cli_context
from cli.envs import init_environments
from cli.render import console, table, usd
from cli.report import print_savings
from environments.git import git_ok
from environments.promote import PromotionResult, promote
from environments.sample import make_sample_repo
from store.costs import costs, fallbacks
from store.db import session_scope
from store.models import TERMINAL_STATUSES, Environment, Task
from store.queries import list_tasks
from switchyard.errors import InputError, ServiceUnavailable
from tasks.context import Context, build_context
from tasks.send import prepare_database

PROVIDER_KEYS = (
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "OLLAMA_HOST",
    "ANTHROPIC_BASE_URL",
    "OPENAI_BASE_URL",
)


def run_demo(*, keep_running: bool, timeout: float, ready_timeout: float | None) -> None:
    """The body of ``switchyard demo`` (:mod:`cli.demo`): the fleet up, the batch, the report, the fleet down."""
    from workers import launcher

    ctx = simulated_only(cli_context(simulate=True, ready_timeout=ready_timeout, profile="demo"))
    refuse_real_environments(ctx)
    ctx = demo_clis.with_agent_clis(ctx, demo_dir(ctx))  # one pr_impl per agent CLI, when installed
    started = datetime.now(UTC) - timedelta(seconds=1)
    console.print(f"[bold]Switchyard demo[/bold] — data in {ctx.settings.data_dir}")
    began = time.monotonic()
    launcher.up(ctx.settings, ctx.fleet, simulate=True, on_event=console.print)
    console.print(f"Fleet ready in {time.monotonic() - began:.1f}s")
    ok = False
    try:
        ok = run(ctx, timeout, started)
    finally:
        if keep_running:
            s = ctx.settings
            console.print(
                f"Fleet left running: Flower http://{s.host}:{s.flower_port}, "
                f"status API http://{s.host}:{s.api_port}. Stop it with: SWITCHYARD_PROFILE=demo switchyard down"
            )
        else:
            launcher.down(ctx.settings, on_event=console.print)
    if not ok:
        raise typer.Exit(1)


def run(ctx: Context, timeout: float, started: datetime) -> bool:
    """The pipeline in every environment, promotion through the stages, then the ladder drill; the report."""
    workspace = demo_dir(ctx) / "workspace"
    init_environments(ctx, str(sample_repo(ctx)), workspace, None, check=DEMO_CHECK)
    ids = submit_all(ctx, demo_clis.route_batch(ctx, batch(ctx)))
    ok = summarize(ids, follow(ctx, ids, timeout, "pipeline"), "Pipeline")
    promotions = promote_all(ctx, workspace)
    ok = ok and all(p.ok for p in promotions)
    drill_ids, drill_states = run_drill(ctx, timeout)
    ok = summarize(drill_ids, drill_states, "Ladder drill") and ok
    everything = set(tracked(ctx, ids + drill_ids))
    report(ctx, everything, promotions, started)
    print_savings(ctx)  # `switchyard report --by group --baseline claude`: actual against all-Claude
    return ok


def simulated_only(ctx: Context) -> Context:
    """The context without provider keys or addresses: the demo, and its workers, never reach a real provider.
    (Its profile, ``demo``, already keeps the user's database, broker, state Redis and workspace out.)"""
    none = dict.fromkeys(
        ("anthropic_api_key", "openai_api_key", "anthropic_base_url", "openai_base_url", "ollama_host")
    )
    return build_context(ctx.settings.model_copy(update=none))


def demo_dir(ctx: Context) -> Path:
    """The demo's own sample repository and workspace: its profile's data directory."""
    return ctx.settings.data_dir


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


DEMO_CHECK = "make test"  # the sample repository's own tests: run before every merge and promotion


def batch(ctx: Context) -> list[dict[str, Any]]:
    """Per environment: a change that goes through the whole pipeline (implement → review on another provider →
    integrate after the check passes), a plan with sub-tasks, and a chore."""
    requests: list[dict[str, Any]] = []
    for env in ctx.fleet.environments.names:
        requests += [
            {
                "kind": "pr_impl",
                "environment": env,
                "title": f"Add a greeting for {env}",
                "description": "Add a short note that greets the environment by name.",
            },
            {"kind": "plan", "environment": env, "goal": f"Add a health endpoint to the {env} service"},
            {"kind": "dev_task", "environment": env, "title": f"Write release notes for {env}"},
        ]
    return requests


def drill(ctx: Context) -> list[dict[str, Any]]:
    """The ladder drill: with Claude failing, one review per environment (Claude is their first rung)."""
    return [
        {"kind": "pr_review", "environment": env, "branch": f"feature/sample-{i}", "title": f"Review sample {i}"}
        for i, env in enumerate(ctx.fleet.environments.names, start=1)
    ]


def submit_all(ctx: Context, requests: list[dict[str, Any]]) -> list[str]:
    from tasks.submit import submit

    return [submit(request, context=ctx) for request in requests]


def tracked(ctx: Context, ids: list[str]) -> dict[str, str]:
    """Status of the submitted tasks and of everything they led to (sub-tasks, reviews, integrations)."""
    with session_scope(ctx.database_url) as session:
        rows = {r.id: r.status for r in session.query(Task.id, Task.status).filter(Task.id.in_(ids))}
        frontier = list(rows)
        while frontier:
            found = session.query(Task.id, Task.status).filter(Task.parent_id.in_(frontier)).all()
            frontier = [r.id for r in found if r.id not in rows]
            rows.update({r.id: r.status for r in found})
    return rows


def follow(ctx: Context, ids: list[str], timeout: float, label: str) -> dict[str, str]:
    """A progress bar until every tracked task is terminal; the final statuses.

    ``timeout`` counts from the last task that finished: a loaded machine that is slow but progressing is
    waited for, a batch where nothing moves for that long is not."""
    deadline, finished = time.monotonic() + timeout, -1
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(label, total=len(ids))
        while True:
            states = tracked(ctx, ids)
            done = sum(1 for s in states.values() if s in TERMINAL_STATUSES)
            progress.update(bar, total=len(states), completed=done)
            if done == len(states):
                return states
            if done > finished:
                deadline, finished = time.monotonic() + timeout, done
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"only {done} of {len(states)} tasks finished, none in the last {timeout:.0f}s; "
                    "see the workers' logs under the data directory's logs/"
                )
            time.sleep(0.5)


def summarize(ids: list[str], states: dict[str, str], what: str) -> bool:
    failed = {i: s for i, s in states.items() if s != "succeeded"}
    console.print(
        f"{what}: {len(ids)} submitted, {len(states) - len(ids)} more enqueued by the fleet (sub-tasks, reviews, "
        "integrations): "
        + ("all succeeded" if not failed else f"{len(failed)} did not: {sorted(set(failed.values()))}")
    )
    return not failed


def promote_all(ctx: Context, workspace: Path) -> list[PromotionResult]:
    """dev → qa → staging in every environment: the check runs on each source stage before the fast-forward."""
    results = []
    for env in ctx.fleet.environments.names:
        for stage in ctx.fleet.environments.stages[1:]:
            results.append(promote(workspace, env, stage, database_url=ctx.database_url))
    return results


def run_drill(ctx: Context, timeout: float) -> tuple[list[str], dict[str, str]]:
    """Claude fails every call while the reviews run; the router falls back and the breaker opens."""
    url = ctx.settings.effective_simulator_url
    httpx.post(f"{url}/_sim/providers/claude", json={"error_rate": 1.0, "error_status": 500}).raise_for_status()
    console.print("Ladder drill: the simulator now fails every Claude call (HTTP 500)")
    try:
        ids = submit_all(ctx, drill(ctx))
        return ids, follow(ctx, ids, timeout, "drill")
    finally:
        httpx.post(f"{url}/_sim/providers/claude/heal").raise_for_status()
        ctx.breakers().reset("claude", "the demo's drill is over")


def results_table(ctx: Context, rows: list[dict[str, Any]], promotions: list[PromotionResult]) -> Table:
    """One row per environment: the pipeline's three steps, the promotions, the plan, the chore, the drill."""
    out = Table(title="Results per environment", title_justify="left")
    for column in ("env", "pr_impl", "pr_review", "pr_integ", "promoted", "plan", "dev_task", "drill review", "cost"):
        out.add_column(column)
    for env in ctx.fleet.environments.names:
        mine = [r for r in rows if r["environment"] == env]
        chain = {r["kind"]: r for r in mine if r["kind"] in ("pr_impl", "pr_integ")}
        reviews = [r for r in mine if r["kind"] == "pr_review"]
        chained = next((r for r in reviews if r["parent_id"] is not None), None)
        drilled = next((r for r in reviews if r["parent_id"] is None), None)
        plan = next((r for r in mine if r["kind"] == "plan"), None)
        children = [r for r in mine if plan is not None and r["parent_id"] == plan["id"]]
        chore = next((r for r in mine if r["kind"] == "dev_task" and r["parent_id"] is None), None)
        stages = [p.to_stage for p in promotions if p.environment == env and p.ok]
        out.add_row(
            env,
            cell(chain.get("pr_impl")),
            cell(chained),
            cell(chain.get("pr_integ")),
            " → ".join(["dev", *stages]),
            f"{cell(plan)} ({sum(r['status'] == 'succeeded' for r in children)}/{len(children)} sub-tasks)",
            cell(chore),
            cell(drilled),
            usd(sum(r["cost_usd"] for r in mine)),
        )
    return out


def cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    mark = "[green]ok[/green]" if row["status"] == "succeeded" else f"[red]{row['status']}[/red]"
    return f"{mark} {row['provider'] or ''}"


def report(ctx: Context, ids: set[str], promotions: list[PromotionResult], since: datetime) -> None:
    with session_scope(ctx.database_url) as session:
        rows = [r for r in list_tasks(session, limit=10_000) if r["id"] in ids]
        spend = costs(session, since=since)
        fell_back = fallbacks(session, ctx.fleet, sorted(ids))
    console.print(results_table(ctx, rows, promotions))
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
        table(
            "Tasks that fell back, and why",
            ("task", "kind", "env", "first choice", "ran on", "status", "cost", "why"),
            (
                (
                    f["id"][:8],
                    f["kind"],
                    f["environment"],
                    f["first_choice"],
                    f["provider"],
                    f["status"],
                    usd(f["cost_usd"]),
                    f["why"],
                )
                for f in fell_back
            ),
        )
    )
    console.print(
        f"Total: {usd(spend['total']['cost_usd'])} (simulated calls at the fleet file's list prices; "
        "Ollama is free and its compute seconds are the model time it reports, summed over calls)"
    )
    console.print(next_steps(ctx.settings.host, ctx.settings.flower_port, ctx.settings.api_port))


def next_steps(host: str, flower_port: int, api_port: int) -> str:
    """What to try after the demo. Every command names the demo's profile: without it, ``down`` would stop (and
    ``tasks show`` would look in) the user's own fleet, not the demo's."""
    demo = "SWITCHYARD_PROFILE=demo switchyard"
    return (
        f"Next: `switchyard demo --keep-running`, then open Flower at http://{host}:{flower_port} and the "
        f"dashboard at http://{host}:{api_port}; `{demo} tasks show ID` for a task's chain, "
        f"`{demo} status --providers`, `{demo} budget list`, `{demo} down`."
    )
