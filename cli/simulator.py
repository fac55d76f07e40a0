"""``switchyard simulator fault|heal|show``: drive the running provider simulator for drills and tests.

They talk to the simulator's control API (``/_sim/*``, see :mod:`simulator.server`) at
``settings.effective_simulator_url``, the one ``switchyard up --simulate`` starts.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.render import console, print_json, table

simulator_app = typer.Typer(help="Drive the running provider simulator: inject faults, heal.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ProviderArg = Annotated[str, typer.Argument(help="claude, codex or ollama.", metavar="PROVIDER", show_default=False)]
Json = dict[str, Any]
COLUMNS = ("latency_ms", "error_rate", "error_status", "retry_after_s", "fail_next", "calls", "errors")


@simulator_app.command("fault")
def fault(
    provider: ProviderArg,
    error_rate: Annotated[
        float | None,
        typer.Option("--error-rate", min=0.0, max=1.0, help="Share of calls that fail, 0-1 (default 1 with --status)."),
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="HTTP status of the failures (400-599), or 'timeout'.")
    ] = None,
    latency_ms: Annotated[int | None, typer.Option("--latency-ms", min=0, help="Added latency of every call.")] = None,
    retry_after: Annotated[
        float | None, typer.Option("--retry-after", min=0.0, help="Seconds sent as retry-after with a 429.")
    ] = None,
    fail_next: Annotated[int | None, typer.Option("--fail-next", min=0, help="Fail exactly the next N calls.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make PROVIDER fail or slow down. With no option, or only --status, every call fails."""
    from providers import simulator_control

    body = simulator_control.fault_change(
        error_rate=error_rate, status=status, latency_ms=latency_ms, retry_after=retry_after, fail_next=fail_next
    )
    view = simulator_control.fault(_url(), provider, body)
    _audit("simulator.fault", {"provider": provider, **body})
    show(provider, view, as_json)


@simulator_app.command("heal")
def heal(provider: ProviderArg, as_json: JsonOpt = False) -> None:
    """No more faults for PROVIDER and its configured latency (the call counters stay)."""
    from providers import simulator_control

    view = simulator_control.heal(_url(), provider)
    _audit("simulator.heal", {"provider": provider})
    show(provider, view, as_json)


@simulator_app.command("show")
def show_all(as_json: JsonOpt = False) -> None:
    """Faults, latency and call counters of every simulated provider."""
    from providers import simulator_control

    state = simulator_control.state(_url())
    if as_json:
        print_json(state)
        return
    rows = [(name, *(view[c] for c in COLUMNS)) for name, view in state["providers"].items()]
    console.print(table("Simulator", ("provider", *COLUMNS), rows))


def show(provider: str, view: Json, as_json: bool) -> None:
    """One provider's state in the simulator after a change."""
    if as_json:
        print_json({"provider": provider, **view})
        return
    console.print(table(f"Simulator: {provider}", COLUMNS, [tuple(view[c] for c in COLUMNS)]))


def _url() -> str:
    from switchyard.settings import load_settings  # pydantic-settings only when a command runs

    return load_settings().effective_simulator_url


def _audit(action: str, arguments: Json) -> None:
    from cli.context import db_context
    from cli.tokens import record_cli

    record_cli(db_context().database_url, action, arguments)
