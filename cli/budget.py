"""Budgets: ``budget list`` and ``budget set``.

``budget set`` stores an operator's budget in SQL, over the fleet file's: the next hold of any worker reads
it, so it takes effect without a restart. ``budget list --json`` prints what ``GET /api/budgets`` answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from cli.context import db_context
from cli.render import console, print_json, table, usd
from cli.tokens import record_cli
from switchyard.vocabulary import ACTIONS, SCOPES, WINDOWS

if TYPE_CHECKING:
    from switchyard.budgets import Budget
    from tasks.context import Context

budget_app = typer.Typer(help="Budgets: caps per scope and window, and what they hold now.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
COLUMNS = ("scope", "target", "window", "cap", "alert", "action", "used", "remaining", "source")


def budget_rows(ctx: Context) -> dict[str, Any]:
    """Every effective budget with its current window: the body of ``budget list --json`` and the API."""
    from store.costs import budget_status
    from store.db import session_scope

    with session_scope(ctx.database_url) as session:
        return {"budgets": budget_status(session, ctx.fleet)}


@budget_app.command("list")
def budget_list(as_json: JsonOpt = False) -> None:
    """Every budget in force (fleet file and overrides) with what its current window holds."""
    ctx = db_context()
    data = budget_rows(ctx)
    if as_json:
        print_json(data)
        return
    show(data["budgets"], "Budgets (current windows, UTC)")


@budget_app.command("set")
def budget_set(
    scope: Annotated[str, typer.Option("--scope", help=f"One of: {', '.join(SCOPES)}.")],
    window: Annotated[str, typer.Option("--window", help=f"One of: {', '.join(WINDOWS)}.")],
    cap: Annotated[float, typer.Option("--cap", help="Cap in US dollars per window (0 stops paid calls).")],
    target: Annotated[str, typer.Option("--target", help="A name of the scope, or '*' for each one.")] = "*",
    alert: Annotated[float | None, typer.Option("--alert", help="Alert line in US dollars (<= cap).")] = None,
    action: Annotated[str | None, typer.Option("--action", help=f"At the cap: {' or '.join(ACTIONS)}.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add or replace a budget; it applies from the next hold, without a restart."""
    from routing.ledger import Ledger

    ctx = db_context()
    before = _alert_of(budget_rows(ctx)["budgets"], scope, target, window)
    budget = Ledger(ctx.database_url, ctx.fleet).set_budget(
        scope=scope, target=target, window=window, cap_usd=cap, alert_usd=alert, action=action
    )
    record_cli(ctx.database_url, "budget.set", _budget_json(budget))
    rows = [row for row in budget_rows(ctx)["budgets"] if _is_of(row, budget)]
    note = alert_note(before, None if budget.alert_micros is None else budget.alert_micros / 1e6, asked=alert, cap=cap)
    if as_json:
        print_json({"set": _budget_json(budget), "budgets": rows, "note": note})
        return
    show(rows, f"Budget set: {budget.scope} {budget.target} {budget.window}")
    if note:
        console.print(note, markup=False, highlight=False)


@budget_app.command("remove")
def budget_remove(
    scope: Annotated[str, typer.Option("--scope", help=f"One of: {', '.join(SCOPES)}.")],
    window: Annotated[str, typer.Option("--window", help=f"One of: {', '.join(WINDOWS)}.")],
    target: Annotated[str, typer.Option("--target", help="The name the budget was set for, or '*'.")] = "*",
    as_json: JsonOpt = False,
) -> None:
    """Remove a budget set with `budget set`; the fleet file's budget for the same key, if any, applies again."""
    ctx = db_context()
    from store.budgets import delete_override
    from store.db import session_scope

    with session_scope(ctx.database_url) as session:
        delete_override(session.connection(), scope=scope, target=target, window=window)
    record_cli(ctx.database_url, "budget.remove", {"scope": scope, "target": target, "window": window})
    data = budget_rows(ctx)
    if as_json:
        print_json({"removed": {"scope": scope, "target": target, "window": window}, **data})
        return
    show(data["budgets"], f"Budget removed: {scope} {target} {window}; budgets in force now")


def _alert_of(rows: list[dict[str, Any]], scope: str, target: str, window: str) -> float | None:
    """The alert line of the budget in force for (scope, target, window) before it is replaced."""
    for row in rows:
        if (row["scope"], row["target"], row["window"]) == (scope, target, window):
            return cast(float | None, row["alert_usd"])
    return None


def alert_note(before: float | None, after: float | None, *, asked: float | None, cap: float) -> str:
    """Pure: what ``budget set`` did to the alert line when --alert was left out (empty when it was given)."""
    if asked is not None or before is None:
        return ""
    if after is not None:
        return f"alert line kept at ${after:g} (the budget this replaces had it; --alert sets another)"
    return (
        f"the alert line ${before:g} is above the new cap ${cap:g}, so this budget has none now; "
        "set one at or under the cap with --alert"
    )


def _is_of(row: dict[str, Any], budget: Budget) -> bool:
    same_target = budget.target == "*" or row["target"] == budget.target
    return (row["scope"], row["window"], row["source"]) == (budget.scope, budget.window, "override") and same_target


def _budget_json(budget: Budget) -> dict[str, Any]:
    return {
        "scope": budget.scope,
        "target": budget.target,
        "window": budget.window,
        "cap_usd": budget.cap_micros / 1e6,
        "alert_usd": None if budget.alert_micros is None else budget.alert_micros / 1e6,
        "action": budget.action,
        "source": budget.source,
    }


def show(rows: list[dict[str, Any]], title: str) -> None:
    cells = (
        (
            r["scope"],
            r["target"],
            r["window"],
            usd(r["cap_usd"]),
            usd(r["alert_usd"]) or "-",
            r["action"],
            usd(r["used_usd"]),
            usd(r["remaining_usd"]),
            r["source"],
        )
        for r in rows
    )
    console.print(table(title, COLUMNS, cells))
