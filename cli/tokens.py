"""Access control: ``token create|list|revoke`` (the status API's bearer tokens) and ``audit`` (admin actions).

A token is printed once, by ``token create``; only its SHA-256 is stored (:mod:`store.tokens`). Every admin
command (token create and revoke, breaker reset, budget set and remove, simulator faults) is written to the audit
table as ``cli:<os user>`` with :func:`record_cli`; over HTTP the actor is the token's name.
"""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import typer

from cli.context import db_context
from cli.render import console, err_console, print_json, table

token_app = typer.Typer(
    help="Bearer tokens of the status API: create (shown once), list, revoke.", no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
NameArg = Annotated[str, typer.Argument(help="The token's name (unique).", metavar="NAME", show_default=False)]


def cli_actor() -> str:
    """The audit's actor of a CLI command: ``cli:<the OS user running it>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container's user): say so rather than fail the command
        return "cli:unknown"


def record_cli(database_url: str, action: str, arguments: dict[str, Any]) -> None:
    """Write one admin action of the CLI to the audit table (arguments masked there)."""
    from store import audit
    from store.db import session_scope

    with session_scope(database_url) as session:
        audit.record(session, actor=cli_actor(), action=action, arguments=arguments)


@token_app.command("create")
def token_create(
    name: NameArg,
    scope: Annotated[str, typer.Option("--scope", help="read, submit or admin (each includes the ones before).")],
) -> None:
    """Create a token and print it once: store it now, it cannot be shown again."""
    from store import audit, tokens
    from store.db import session_scope

    tokens.check_scope(scope)
    ctx = db_context()
    with session_scope(ctx.database_url) as session:
        token = tokens.create_token(session, name=name, scope=scope)
        audit.record(session, actor=cli_actor(), action="token.create", arguments={"name": name, "scope": scope})
    print(token)
    err_console.print(
        f"token {name!r} ({scope}) created; it is shown only now. Send it as `Authorization: Bearer <token>`.",
        markup=False,
        highlight=False,
    )


@token_app.command("list")
def token_list(as_json: JsonOpt = False) -> None:
    """Every token: name, scope, created, last used, revoked (never the token)."""
    from store import tokens
    from store.db import session_scope

    ctx = db_context()
    with session_scope(ctx.database_url) as session:
        rows = tokens.list_tokens(session)
    if as_json:
        print_json({"tokens": rows})
        return
    columns = ("name", "scope", "created (UTC)", "last used (UTC)", "revoked (UTC)")
    cells = (
        (r["name"], r["scope"], _when(r["created_at"]), _when(r["last_used_at"]) or "never", _when(r["revoked_at"]))
        for r in rows
    )
    console.print(table("API tokens", columns, cells))


@token_app.command("revoke")
def token_revoke(name: NameArg) -> None:
    """Revoke a token by name: the API refuses it from the next request."""
    from store import audit, tokens
    from store.db import session_scope

    ctx = db_context()
    with session_scope(ctx.database_url) as session:
        tokens.revoke_token(session, name=name)
        audit.record(session, actor=cli_actor(), action="token.revoke", arguments={"name": name})
    console.print(f"token {name!r} revoked", markup=False, highlight=False)


def audit_list(
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="How many, newest first.")] = 50,
) -> None:
    """The admin actions recorded, newest first: who, what, with which arguments (masked), when."""
    from store import audit
    from store.db import session_scope

    ctx = db_context()
    with session_scope(ctx.database_url) as session:
        rows = audit.listing(session, limit=limit)
    if as_json:
        print_json({"audit": rows})
        return
    cells = ((_when(r["at"]), r["actor"], r["action"], _args(r["arguments"])) for r in rows)
    console.print(table("Audit (newest first)", ("at (UTC)", "actor", "action", "arguments"), cells))


def _when(iso: str | None) -> str:
    return "" if iso is None else iso[:19].replace("T", " ")


def _args(arguments: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in arguments.items())


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
    app.command("audit")(audit_list)
