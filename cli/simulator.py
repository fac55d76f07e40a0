"""``switchyard simulator fault|heal|show``: drive the running provider simulator for drills and tests.

They talk to the simulator's control API (``/_sim/*``, see :mod:`simulator.server`) at
``settings.effective_simulator_url``, the one ``switchyard up --simulate`` starts.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.render import console, print_json, table
from switchyard.errors import InputError, NotFound, ServiceUnavailable

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
    change: Json = {"latency_ms": latency_ms, "retry_after_s": retry_after, "fail_next": fail_next}
    if status is not None:
        change["error_status"] = parse_status(status)
    nothing_else = latency_ms is None and retry_after is None and fail_next is None
    if error_rate is None and (status is not None or nothing_else):
        error_rate = 1.0
    change["error_rate"] = error_rate
    body = {k: v for k, v in change.items() if v is not None}
    show(provider, control("post", f"/_sim/providers/{provider}", body), as_json)


@simulator_app.command("heal")
def heal(provider: ProviderArg, as_json: JsonOpt = False) -> None:
    """No more faults for PROVIDER and its configured latency (the call counters stay)."""
    show(provider, control("post", f"/_sim/providers/{provider}/heal"), as_json)


@simulator_app.command("show")
def show_all(as_json: JsonOpt = False) -> None:
    """Faults, latency and call counters of every simulated provider."""
    state = control("get", "/_sim/state")
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


def parse_status(text: str) -> int | str:
    if text == "timeout":
        return text
    if text.isdigit() and 400 <= int(text) <= 599:
        return int(text)
    raise InputError(f"--status must be an HTTP error status 400-599 or 'timeout', got {text!r}")


def control(method: str, path: str, body: Json | None = None) -> Json:
    """One call of the simulator's control API, its errors turned into messages that say what to do."""
    import httpx  # only when the simulator is called

    from switchyard.settings import load_settings

    url = load_settings().effective_simulator_url.rstrip("/")
    try:
        response = httpx.request(method, f"{url}{path}", json=body, timeout=5.0)
    except httpx.TransportError as exc:
        raise ServiceUnavailable(
            f"the simulator is not answering at {url} ({type(exc).__name__}); start it with `switchyard up "
            "--simulate` or `python -m simulator`, or set SWITCHYARD_SIMULATOR_URL to where it runs"
        ) from None
    data: Json = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code == 404:
        raise NotFound(f"the simulator at {url}: {data.get('error', 'not found')}")
    if response.status_code == 422:
        raise InputError(f"the simulator refused the change: {data.get('error')}")
    if response.is_error:
        raise ServiceUnavailable(f"the simulator at {url} answered HTTP {response.status_code}")
    return data
