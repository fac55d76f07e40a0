"""``switchyard stress``: the progressive stress cycle against a real fleet (engine: :mod:`ops.stress`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command()(stress)


def stress(
    quick: Annotated[bool, typer.Option("--quick", help="Short phases: the whole cycle in about two minutes.")] = False,
    out: Annotated[
        Path, typer.Option("--out", help="Where stress.json, stress.html and Locust's CSV files go.")
    ] = Path("stress-report"),
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="The fleet's database, e.g. postgresql+psycopg://… (default: SQLite)."),
    ] = None,
    attach: Annotated[
        bool,
        typer.Option(
            "--attach", help="Load the fleet already running (switchyard up --simulate) instead of one's own."
        ),
    ] = False,
    gate: Annotated[
        list[str] | None,
        typer.Option(
            "--gate",
            help="Override a gate, PHASE.GATE=VALUE (e.g. light.p95_submit_ms=500; * for every phase); repeatable. "
            "Also SWITCHYARD_STRESS_GATES.",
        ),
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the fleet's home (logs, database) afterwards.")] = False,
) -> None:
    """Idle, baseline, light, medium, heavy, extreme and chaos: each phase's load held, then its gates checked.

    Stops at the first failed gate and names it (exit 1); exit 0 when the whole cycle passes."""
    from ops import stress as engine
    from ops.stress_phases import PHASES, overrides_from_env, parse_overrides, with_overrides
    from switchyard.errors import InputError

    if attach and database_url:
        raise InputError("--attach uses the running fleet's database: leave out --database-url")
    overrides = parse_overrides([*overrides_from_env(), *(gate or [])])

    def log(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)

    options = engine.Options(
        quick=quick,
        out=out,
        database_url=database_url,
        attach=attach,
        keep=keep,
        phases=with_overrides(PHASES, overrides),
    )
    data = engine.run(options, log)
    print(engine.table(data))
    said = (
        "passed"
        if data["ok"]
        else f"stopped at phase {data['failed']['phase']}: {'; '.join(data['failed']['gates'])}"
        if data["failed"]
        else "did not pass"
    )
    print(f"stress: {said}; {data['wall_s']:.0f} s; report: {out / 'stress.html'} and {out / 'stress.json'}")
    if not data["ok"]:
        raise typer.Exit(1)
