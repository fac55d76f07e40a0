"""Alerts: ``alerts list`` (what was raised, and whether it reached anyone) and ``alerts test``.

``alerts list --json`` prints the rows of :func:`store.alerts.listing`; ``alerts test`` sends one alert to every
configured URL now (not through the sender) and says per URL, masked, whether the receiver took it.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape

from cli.context import cli_context, db_context
from cli.render import console, print_json, table
from store.names import ALERT_CAUSES
from switchyard.errors import ConfigError, InputError

alerts_app = typer.Typer(
    help="Alerts: budget lines and caps, breakers, disabled providers, failed tasks.", no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@alerts_app.command("list")
def alerts_list(
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="How many, newest first.")] = 50,
    cause: Annotated[str | None, typer.Option("--cause", help=f"Only one of: {', '.join(ALERT_CAUSES)}.")] = None,
) -> None:
    """The alerts recorded, newest first, with their delivery state."""
    from store import alerts as alert_rows
    from store.db import session_scope

    if cause is not None and cause not in ALERT_CAUSES:
        raise InputError(f"--cause {cause!r} is not a cause; choose one of: {', '.join(ALERT_CAUSES)}")
    ctx = db_context()
    with session_scope(ctx.database_url) as session:
        rows = alert_rows.listing(session, limit=limit, cause=cause)
    if as_json:
        print_json({"alerts": rows})
        return
    columns = ("id", "created (UTC)", "cause", "title", "state", "attempts", "last error")
    cells = (
        (r["id"], (r["created_at"] or "")[:19], r["cause"], r["title"], r["state"], r["attempts"], r["last_error"])
        for r in rows
    )
    console.print(table("Alerts (newest first)", columns, ([escape(str(c or "")) for c in row] for row in cells)))


@alerts_app.command("test")
def alerts_test(as_json: JsonOpt = False) -> None:
    """Send one test alert to every alert URL now and say, per URL, whether it was delivered."""
    from alerts.deliver import alert_urls, send_one
    from switchyard.alert_urls import mask

    ctx = cli_context()
    urls = alert_urls(ctx.settings, ctx.fleet)
    if not urls:
        raise ConfigError(
            f'no alert URL configured: add `urls = ["json://host:port/path"]` under [alerts] in {ctx.fleet.source}, '
            "or set SWITCHYARD_ALERT_URLS"
        )
    title = "Switchyard test alert"
    body = f"Sent by `switchyard alerts test` on {socket.gethostname()} at {datetime.now(UTC).isoformat()}."
    results = []
    for url in urls:
        why = send_one(url, title, body, "test", timeout_s=ctx.fleet.alerts.timeout_s)
        results.append({"url": mask(url), "delivered": why is None, "error": why})
    if as_json:
        print_json({"results": results})
    else:
        rows = ((r["url"], "delivered" if r["delivered"] else "NOT delivered", r["error"] or "") for r in results)
        console.print(table("Test alert", ("url", "result", "error"), ([escape(str(c)) for c in r] for r in rows)))
    if not all(r["delivered"] for r in results):
        raise typer.Exit(1)
