"""The providers' shared breakers and limits: ``status --providers`` and ``breaker enable|reset|heal``.

All read the state Redis (``settings.effective_state_url``: the broker unless SWITCHYARD_STATE_URL names one).
A model that answered 404 is marked unusable there (:mod:`routing.marks`): ``status --providers`` lists it,
``breaker heal`` forgets it (and ``breaker reset``, which also closes the breaker).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.context import cli_context, db_context
from cli.render import console, print_json, table
from switchyard.errors import InputError

if TYPE_CHECKING:
    from routing.breaker import Breakers
    from tasks.context import Context

breaker_app = typer.Typer(
    help="Provider circuit breakers: enable a disabled provider, reset one, heal its unusable models.",
    no_args_is_help=True,
)
ProviderArg = Annotated[
    str, typer.Argument(help="A provider of the fleet file.", metavar="PROVIDER", show_default=False)
]
COLUMNS = ("provider", "state", "failures", "last transition", "in flight", "calls/min", "unusable models")


def show_providers(as_json: bool) -> None:
    """Per provider: breaker state, failures, last transition, in-flight calls and calls in the last minute."""
    from routing.state import providers_view

    ctx = cli_context()
    rows = providers_view(ctx.settings.effective_state_url, ctx.fleet)
    if as_json:
        print_json({"providers": rows})
        return
    console.print(table("Providers", COLUMNS, [_cells(row) for row in rows]))


def _cells(row: dict[str, Any]) -> tuple[Any, ...]:
    state = row["state"]
    if state == "open":
        state = f"open (half-open in {row['retry_in_s']:.0f}s)"
    last = row["last_transition"]
    when = "" if last is None else str(last["at"])[:19].replace("T", " ")
    moved = "-" if last is None else f"{last['from']} → {last['to']} ({when} UTC): {last['cause']}"
    rpm = row["requests_per_minute"] or "no limit"
    return (
        row["provider"],
        state,
        row["failures"],
        moved,
        f"{row['in_flight']}/{row['max_in_flight']}",
        f"{row['calls_last_minute']}/{rpm}",
        _unusable(row.get("unusable_models") or []),
    )


def _unusable(marks: list[dict[str, Any]]) -> str:
    """Models marked unusable: the reason of those in force; a mark the fleet file changed since is ignored."""
    if not marks:
        return "-"
    return "; ".join(
        f"{m['model']}: {m['reason']}" if m["in_force"] else f"{m['model']}: ignored (the fleet file changed)"
        for m in marks
    )


@breaker_app.command("enable")
def enable(provider: ProviderArg) -> None:
    """Enable a provider that was disabled (its credentials were refused) once its key is fixed."""
    from cli.tokens import record_cli

    breakers, ctx = _breakers(provider)
    breakers.enable(provider)
    record_cli(ctx.database_url, "breaker.enable", {"provider": provider})
    show_one(ctx, provider)


@breaker_app.command("reset")
def reset(provider: ProviderArg) -> None:
    """Close a provider's breaker and forget its failures and unusable models, whatever its state."""
    from cli.tokens import record_cli

    breakers, ctx = _breakers(provider)
    breakers.reset(provider)
    record_cli(ctx.database_url, "breaker.reset", {"provider": provider})
    show_one(ctx, provider)


@breaker_app.command("heal")
def heal(
    provider: ProviderArg,
    model: Annotated[
        str | None, typer.Option("--model", help="Only this model (default: every model of the provider).")
    ] = None,
) -> None:
    """Make a provider's models that answered 404 usable again (the model was pulled, access granted...).

    The breaker itself is left as it is; `breaker reset` does both."""
    from cli.tokens import record_cli

    breakers, ctx = _breakers(provider)
    healed = breakers.heal_models(provider, model)
    record_cli(ctx.database_url, "breaker.heal", {"provider": provider, "model": model})
    what = f"model {model}" if model else "every model"
    console.print(f"{provider}: {what} usable again ({healed} mark{'' if healed == 1 else 's'} removed)")
    show_one(ctx, provider)


def _breakers(provider: str) -> tuple[Breakers, Context]:
    from routing.state import breakers_for

    ctx = db_context()
    if provider not in ctx.fleet.providers:
        raise InputError(f"unknown provider {provider!r}; the fleet has: {', '.join(ctx.fleet.providers)}")
    return breakers_for(ctx.settings.effective_state_url, ctx.fleet, database_url=ctx.database_url), ctx


def show_one(ctx: Context, provider: str) -> None:
    from routing.state import providers_view

    rows = [row for row in providers_view(ctx.settings.effective_state_url, ctx.fleet) if row["provider"] == provider]
    console.print(table("Providers", COLUMNS, [_cells(row) for row in rows]))
