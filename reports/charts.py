"""The report's charts as Vega-Lite specs (altair), the self-contained HTML report, and the PNG.

The HTML file carries everything it needs: the tables, the specs with their data inline, and Vega, Vega-Lite
and Vega-Embed themselves (the bundle ``vl-convert-python`` ships, inlined in a ``<script>``), so it opens
offline and asks no other host for anything. ``/costs`` on the status API draws the same specs with the same
bundle, served by the API (:func:`vega_bundle`). ``--format png`` renders the main chart with vl-convert.
"""

from __future__ import annotations

import html
import json
import re
from functools import lru_cache
from typing import Any

import altair as alt
import vl_convert

from reports.render import budget_rows, summary_lines, table_rows, top_rows

Row = dict[str, Any]
WIDTH = 560


@lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed as one script that sets ``window.vegaEmbed`` (built once per process)."""
    return vl_convert.javascript_bundle("window.vegaEmbed = vegaEmbed; window.vega = vega; window.vegaLite = vegaLite;")


def _spend_per_day(report: Row) -> alt.Chart:
    data = alt.InlineData(values=report["series"]["day_provider"])
    chart: alt.Chart = (
        alt.Chart(data, title="Spend per day by provider (USD)", width=WIDTH)
        .mark_bar()
        .encode(
            x=alt.X("day:O", title="day (UTC)"),
            y=alt.Y("sum(cost_usd):Q", title="USD"),
            color=alt.Color("provider:N"),
            tooltip=["day:O", "provider:N", alt.Tooltip("cost_usd:Q", format="$.4f")],
        )
    )
    return chart


def _spend_by_group(report: Row) -> alt.Chart:
    data = alt.InlineData(values=report["series"]["group"])
    chart: alt.Chart = (
        alt.Chart(data, title="Spend by group (USD)", width=WIDTH)
        .mark_bar()
        .encode(
            x=alt.X("actual_usd:Q", title="USD"),
            y=alt.Y("group:N", sort="-x"),
            tooltip=["group:N", alt.Tooltip("actual_usd:Q", format="$.4f")],
        )
    )
    return chart


def _actual_vs_baseline(report: Row) -> alt.Chart:
    values = [
        {"group": r["group"], "cost": label, "usd": r[field]}
        for r in report["series"]["group"]
        for label, field in (("actual", "actual_usd"), (f"baseline {report['baseline']['model']}", "baseline_usd"))
    ]
    chart: alt.Chart = (
        alt.Chart(alt.InlineData(values=values), title="Actual against baseline by group (USD)", width=WIDTH)
        .mark_bar()
        .encode(
            x=alt.X("group:N"),
            xOffset="cost:N",
            y=alt.Y("usd:Q", title="USD"),
            color=alt.Color("cost:N"),
            tooltip=["group:N", "cost:N", alt.Tooltip("usd:Q", format="$.4f")],
        )
    )
    return chart


def _burn_down(budget: Row) -> alt.Chart:
    values = [{**point, "remaining_usd": point["remaining_micros"] / 1e6} for point in budget["burn_down"]]
    title = f"Budget {budget['scope']} {budget['target']} per {budget['window']}: cap left (USD)"
    chart: alt.Chart = (
        alt.Chart(alt.InlineData(values=values), title=title, width=WIDTH)
        .mark_line(point=True)
        .encode(
            x=alt.X("at:T", title="time (UTC)"),
            y=alt.Y("remaining_usd:Q", title="USD left"),
            color=alt.Color("line:N", title=""),
            strokeDash=alt.StrokeDash("line:N", legend=None),
            tooltip=[alt.Tooltip("at:T", format="%Y-%m-%d %H:%M"), alt.Tooltip("remaining_usd:Q", format="$.4f")],
        )
    )
    return chart


def chart_specs(report: Row) -> dict[str, dict[str, Any]]:
    """Every chart of the report as a Vega-Lite spec, data inline; the first is the main chart (the PNG)."""
    specs = {
        "spend_per_day": _spend_per_day(report),
        "spend_by_group": _spend_by_group(report),
        "actual_vs_baseline": _actual_vs_baseline(report),
    }
    for i, budget in enumerate(report["budgets"]):
        specs[f"burn_down_{i}"] = _burn_down(budget)
    return {name: chart.to_dict() for name, chart in specs.items()}


def png(report: Row) -> bytes:
    """The main chart (spend per day by provider) as a PNG."""
    return bytes(vl_convert.vegalite_to_png(chart_specs(report)["spend_per_day"], scale=2))


def _script_safe(text: str) -> str:
    """Script text that cannot end its ``<script>`` element early (``</script`` becomes ``<\\/script``)."""
    return re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE)


def _table(title: str, headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<h2>{html.escape(title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; } th, td { padding: 2px 8px; border-bottom: 1px solid #ddd; }
td { text-align: right; } td:first-child, th:first-child { text-align: left; } .chart { margin: 1em 0; }
"""


def html_report(report: Row) -> str:
    """The report as one HTML file that works offline: tables, lines, and the charts drawn by inlined Vega."""
    specs = chart_specs(report)
    divs = "".join(f'<div class="chart" id="chart-{name}"></div>' for name in specs)
    by = ", ".join(report["by"]) or "nothing (totals only)"
    lines = "".join(f"<p>{html.escape(line)}</p>" for line in summary_lines(report))
    kinds = [[k["kind"], k["cost_usd"], str(k["tasks"]), str(k["share_pct"])] for k in report["by_kind"]]
    embed = (
        f"const specs = {json.dumps(specs)};\n"
        "for (const [name, spec] of Object.entries(specs)) {\n"
        "  vegaEmbed('#chart-' + name, spec, {actions: false, renderer: 'svg'})\n"
        "    .catch((error) => console.error('chart ' + name + ': ' + error));\n"
        "}\n"
    )
    return "".join(
        [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            "<title>Switchyard cost report</title>",
            f"<style>{STYLE}</style></head><body>",
            f"<h1>Switchyard cost report</h1><p>Grouped by {html.escape(by)}.</p>",
            _table("Spend", *table_rows(report)),
            lines,
            divs,
            _table("Budgets: where the money goes next", *budget_rows(report)),
            _table("Cost per kind", ["kind", "cost $", "tasks", "share %"], kinds),
            _table("Ten most expensive tasks", *top_rows(report)),
            f"<script>{_script_safe(vega_bundle())}</script>",
            f"<script>{_script_safe(embed)}</script>",
            "</body></html>",
        ]
    )
