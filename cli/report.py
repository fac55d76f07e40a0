"""``switchyard report``: spend over a period, grouped, against a baseline, with the budgets' forward view.

The numbers come from :func:`reports.report.cost_report`, the same function ``GET /api/reports/costs`` calls.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.context import db_context
from cli.render import console, print_json, table
from reports import render
from reports.period import KEYS
from switchyard.errors import InputError

if TYPE_CHECKING:
    from tasks.context import Context

FORMATS = ("table", "json", "csv", "html", "png")
SAVINGS = ("tasks", "succeeded", "cost_usd", "baseline_usd", "saving_usd", "saving_pct")
SPEND = tuple(name for name in render.HEADERS if name not in SAVINGS[3:])


def report(
    since: Annotated[str | None, typer.Option("--since", help="A date, an ISO moment or a duration (7d, 24h).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Same forms; a date includes that whole day.")] = None,
    by: Annotated[str | None, typer.Option("--by", help=f"Comma-separated keys: {','.join(KEYS)}.")] = None,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="PROVIDER[:MODEL] to reprice at (default: the fleet file's).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)}.")] = "table",
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file instead of standard output.")] = None,
    savings: Annotated[
        bool, typer.Option("--savings", help="Table: only the actual-against-baseline columns.")
    ] = False,
) -> None:
    """Spend by env, stage, group, kind, provider, model, day or hour; reconciled with the ledger (default: this
    month). Tables, JSON, CSV, a self-contained HTML file with charts, or the main chart as a PNG."""
    from reports.report import cost_report
    from store.db import session_scope

    if fmt not in FORMATS:
        raise InputError(f"--format: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "png" and out is None:
        raise InputError("--format png writes an image: name the file with --out FILE.png")
    ctx = db_context()
    with session_scope(ctx.database_url) as session:
        data = cost_report(
            session, ctx.fleet, now=datetime.now(UTC), since=since, until=until, by=by, baseline=baseline
        )
    from reports import charts  # altair and the Vega bundle: only when a chart is asked for

    if fmt == "table":
        _tables(data, savings, out)
    elif fmt == "json":
        _write(out, data=data)
    elif fmt == "csv":
        _write(out, text=render.to_csv(data))
    elif fmt == "html":
        _write(out, text=charts.html_report(data))
    else:
        assert out is not None  # noqa: S101 - checked above
        out.write_bytes(charts.png(data))
        print(f"wrote {out}")


def _write(out: Path | None, *, text: str | None = None, data: Any = None) -> None:
    if data is not None:
        if out is None:
            print_json(data)
            return
        import json

        text = json.dumps(data, indent=2, default=str)
    assert text is not None  # noqa: S101 - one of the two is given
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}")


def _tables(data: dict[str, Any], savings: bool, out: Path | None) -> None:
    if out is not None:
        raise InputError("--out goes with --format json, csv, html or png; a table prints to the terminal")
    by = ", ".join(data["by"]) or "totals"
    if not savings:
        console.print(table(f"Spend by {by}", *render.table_rows(data, SPEND)))
    model = data["baseline"]["model"]
    console.print(table(f"Savings by {by} against {model}", *render.table_rows(data, SAVINGS)))
    for line in render.summary_lines(data):
        console.print(line, highlight=False, markup=False)
    if savings:
        return
    console.print(table("Budgets: where the money goes next", *render.budget_rows(data)))
    kinds = [[k["kind"], k["cost_usd"], str(k["tasks"]), str(k["share_pct"])] for k in data["by_kind"]]
    console.print(table("Cost per kind", ["kind", "cost $", "tasks", "share %"], kinds))
    if data["top_tasks"]:
        console.print(table("Ten most expensive tasks", *render.top_rows(data)))


def print_savings(ctx: Context) -> None:
    """What ``switchyard report --by group --baseline claude --savings`` prints (the demo ends with it)."""
    from reports.report import cost_report
    from store.db import session_scope

    with session_scope(ctx.database_url) as session:
        data = cost_report(session, ctx.fleet, now=datetime.now(UTC), by="group", baseline="claude")
    _tables(data, True, None)


def register(app: typer.Typer) -> None:
    app.command()(report)
