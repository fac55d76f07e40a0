"""Running the fleet: ``up``, ``down``, ``status``, ``health``, ``validate``, ``db upgrade``."""

from __future__ import annotations

import threading
from typing import Annotated, Any

import typer

from cli.context import cli_context, db_context
from cli.render import console, err_console, print_json, table
from store.db import session_scope
from tasks.context import Context

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(restart)
    app.command()(status)
    app.command()(health)
    app.command()(validate)


ReadyTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--ready-timeout",
        min=0.001,
        help="Seconds to wait for the services to answer (default: SWITCHYARD_READY_TIMEOUT, else adaptive).",
    ),
]


def up(
    simulate: Annotated[bool, typer.Option("--simulate", help="Start the provider simulator too.")] = False,
    detach: Annotated[bool, typer.Option("--detach", help="Start and return; stop later with `down`.")] = False,
    ready_timeout: ReadyTimeoutOpt = None,
) -> None:
    """Start the broker (embedded unless SWITCHYARD_BROKER_URL is set), one worker per group, Flower, the API.

    When part of the fleet already runs (a worker died), only what is missing is started."""
    from workers import launcher, restart, supervise

    ctx = cli_context(simulate=True if simulate else None, ready_timeout=ready_timeout)
    partial = any(state.alive for state in launcher.fleet_status(ctx.settings))
    if partial and not simulate and restart.simulator_running(ctx.settings):
        simulate = True  # what is missing of a simulated fleet joins it simulated
        ctx = cli_context(simulate=True, ready_timeout=ready_timeout)
    prepare(ctx)
    warn_unusable_providers(ctx)
    settings = ctx.settings
    running = launcher.up(settings, ctx.fleet, simulate=simulate, on_event=console.print)
    console.print(f"Flower:     http://{settings.host}:{settings.flower_port}")
    console.print(f"Status API: http://{settings.host}:{settings.api_port}  (dashboard at /, docs at /docs)")
    if detach or partial:
        started = ", ".join(child.name for child in running)
        if partial:
            console.print(f"Started what was missing ({started}); the rest was already running.")
        console.print("Fleet is up. Stop it with: switchyard down")
        return
    console.print("Fleet is up. Press Ctrl-C to stop.")
    stop = threading.Event()
    restore = supervise.stop_on_signals(stop)
    died = None

    def revive(child: launcher.RunningService, why: str) -> launcher.RunningService:
        err_console.print(f"[yellow]{why}[/yellow]; starting it again")
        (new,) = launcher.up(settings, ctx.fleet, simulate=simulate, services={child.name}, on_event=console.print)
        return new

    try:
        died = supervise.supervise(running, stop, revive=revive)
        if died:
            err_console.print(f"[red]{died}[/red]; stopping the fleet")
    finally:
        restore()
        launcher.down(settings, on_event=console.print)
    if died:
        raise typer.Exit(1)


def restart(
    group: Annotated[str, typer.Argument(help="The session group whose worker to replace.")],
    ready_timeout: ReadyTimeoutOpt = None,
) -> None:
    """Stop one group's worker (if it runs) and start it again; the rest of the fleet keeps running."""
    from workers import restart as restarting

    ctx = cli_context(ready_timeout=ready_timeout)
    simulate = restarting.simulator_running(ctx.settings)  # a simulated fleet's worker stays simulated
    if simulate:
        ctx = cli_context(simulate=True, ready_timeout=ready_timeout)
    child = restarting.restart(ctx.settings, ctx.fleet, group, simulate=simulate, on_event=console.print)
    console.print(f"Restarted {child.name} (pid {child.pid}).")


def warn_unusable_providers(ctx: Context) -> None:
    """Say at start which providers no task will be able to use, instead of letting tasks end no_provider."""
    from providers.registry import available

    reasons = {name: available(name, ctx.settings) for name in ctx.fleet.providers}
    unusable = {name: why for name, why in reasons.items() if why}
    for name, why in unusable.items():
        err_console.print(f"[yellow]warning:[/yellow] provider {name} cannot be used: {why}")
    if len(unusable) == len(reasons):
        err_console.print(
            "[yellow]warning:[/yellow] no provider is usable: every task would end no_provider; "
            "set API keys or start with --simulate"
        )


def down() -> None:
    """Stop every process `up` started for this profile (stale pidfiles are detected and cleaned)."""
    from workers import launcher

    ctx = cli_context()
    stopped = launcher.down(ctx.settings, on_event=console.print)
    if not stopped:
        console.print("Nothing was running.")


def prepare(ctx: Context) -> None:
    """Schema at head and the groups table equal to the fleet file."""
    from store import repo
    from tasks.send import prepare_database

    prepare_database(ctx.database_url)
    with session_scope(ctx.database_url) as session:
        repo.sync_groups(session, ctx.fleet)


def status(
    groups: Annotated[bool, typer.Option("--groups", help="Only the session groups.")] = False,
    envs: Annotated[bool, typer.Option("--envs", help="Only environments and stages.")] = False,
    providers: Annotated[
        bool, typer.Option("--providers", help="Only the providers: breakers, failures, in-flight calls, rates.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Live workers per group (Celery inspection), queue depth, and per environment/stage counts."""
    if providers:
        from cli.breakers import show_providers

        show_providers(as_json)
        return
    from cli.status import environments_view, groups_view

    ctx = db_context()
    both = not groups and not envs
    data: dict[str, Any] = {}
    if groups or both:
        data["groups"] = groups_view(ctx)
    if envs or both:
        data["environments"] = environments_view(ctx)
    if as_json:
        print_json(data)
        return
    rows: list[tuple[Any, ...]]
    if "groups" in data:
        rows = [
            (
                g["name"],
                g["queue"],
                g["sessions"],
                ", ".join(g["workers"]) or "-",
                g["queue_depth"],
                g["active"],
                counts_text(g["counts"]),
            )
            for g in data["groups"]
        ]
        cols = ("group", "queue", "sessions", "live workers", "queued msgs", "active", "tasks by status")
        console.print(table("Session groups", cols, rows))
    if "environments" in data:
        rows = [
            (e["environment"], e["stage"], e.get("branch", ""), counts_text(e["counts"]), e["last_result"])
            for e in data["environments"]
        ]
        console.print(table("Environments", ("env", "stage", "branch", "tasks by status", "last result"), rows))


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{status} {n}" for status, n in sorted(counts.items())) or "-"


def health(as_json: JsonOpt = False) -> None:
    """Check the database, the broker and the fleet's processes; exit 1 when something is down."""
    from cli.status import health_view

    ctx = cli_context()
    checks = health_view(ctx)
    ok = all(c["ok"] for c in checks)
    if as_json:
        print_json({"ok": ok, "checks": checks})
    else:
        rows = ((c["name"], "ok" if c["ok"] else "[red]DOWN[/red]", c["detail"]) for c in checks)
        console.print(table("Health", ("check", "state", "detail"), rows))
    if not ok:
        raise typer.Exit(1)


def validate() -> None:
    """Load and check the settings and the fleet file; print what was loaded."""
    ctx = cli_context()
    fleet = ctx.fleet
    console.print(f"{fleet.source}: valid for profile {fleet.profile!r}")
    console.print(
        f"  environments: {', '.join(fleet.environments.names)}; stages: {', '.join(fleet.environments.stages)}"
    )
    for g in fleet.groups:
        console.print(f"  group {g.name}: queue {g.queue}, {g.sessions} sessions, kinds {g.kinds}, ladder {g.ladder}")
    from alerts.deliver import alert_urls
    from switchyard.alert_urls import mask

    urls = alert_urls(ctx.settings, fleet)
    shown = ", ".join(mask(url) for url in urls) or "none (alerts are recorded, not sent)"
    console.print(f"  alert URLs: {shown}", markup=False)
    console.print(f"  data directory: {ctx.settings.data_dir}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema to the latest migration."""
    ctx = cli_context()
    prepare(ctx)
    console.print(f"database at head: {redacted(ctx.database_url)}")


def redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
