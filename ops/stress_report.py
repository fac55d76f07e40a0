"""The stress cycle's report as one self-contained HTML page: the phase table, the gate that stopped the cycle,
and a chart per phase (altair: the submission rate and p95 submit latency Locust saw, the tasks waiting and
the workers' resident memory the driver sampled), drawn offline by the Vega bundle :mod:`reports.charts`
inlines (no CDN)."""

from __future__ import annotations

import html
import json
from typing import Any

import altair as alt

from reports.charts import STYLE, vega_bundle

Row = dict[str, Any]
WIDTH = 520
METRICS = (
    ("rps", "submits/s"),
    ("p95_ms", "p95 submit ms"),
    ("queued", "tasks waiting"),
    ("rss_mb", "workers RSS MB"),
)


def phase_points(phase: Row) -> list[Row]:
    """One row per (second, metric) of ``phase``: Locust's history and the driver's samples, seconds from its
    start."""
    points: list[Row] = []
    history = phase.get("locust", {}).get("history", [])
    first = history[0]["t"] if history else 0.0
    for h in history:
        t = round(h["t"] - first, 1)
        points += [{"t": t, "metric": label, "value": h[key]} for key, label in METRICS[:2] if h[key] is not None]
    for s in phase.get("series", []):
        points += [{"t": s["t"], "metric": label, "value": s[key]} for key, label in METRICS[2:]]
    return points


def phase_chart(phase: Row) -> dict[str, Any]:
    title = f"{phase['name']}: {phase['rate']:g} tasks/s, {phase['users']} users ({phase['state']})"
    chart = (
        alt.Chart(alt.InlineData(values=phase_points(phase)), width=WIDTH, height=70)
        .mark_line(point=True)
        .encode(
            x=alt.X("t:Q", title="seconds into the phase"),
            y=alt.Y("value:Q", title=None),
            color=alt.Color("metric:N", legend=None),
            row=alt.Row("metric:N", title=None, sort=[label for _, label in METRICS]),
            tooltip=["metric:N", "t:Q", "value:Q"],
        )
        .resolve_scale(y="independent")
        .properties(title=title)
    )
    spec: dict[str, Any] = chart.to_dict()
    return spec


def _cell(value: Any) -> str:
    return "-" if value is None else html.escape(str(value))


def html_page(data: Row) -> str:
    gates = [k for k in data["phases"][0]["gates"]] if data["phases"] else []
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["phase", "state", "tasks/s", "users", *gates, "failed"])
    body = ""
    for p in data["phases"]:
        measured = "".join(f"<td>{_cell(p['measured'].get(g))} / {_cell(p['gates'][g])}</td>" for g in gates)
        failed = html.escape("; ".join(p["failed"]))
        body += (
            f"<tr><td>{html.escape(p['name'])}</td><td>{html.escape(p['state'])}</td><td>{p['rate']:g}</td>"
            f"<td>{p['users']}</td>{measured}<td>{failed}</td></tr>"
        )
    verdict = (
        "The whole cycle passed."
        if data["ok"]
        else f"Stopped at phase {data['failed']['phase']}: {'; '.join(data['failed']['gates'])}."
        if data["failed"]
        else "Not every phase passed."
    )
    specs = {p["name"]: phase_chart(p) for p in data["phases"] if p["state"] != "not run"}
    charts = "".join(
        f"<h2>{html.escape(name)}</h2>"
        + "".join(f"<p>{html.escape(e)}</p>" for e in next(p for p in data["phases"] if p["name"] == name)["events"])
        + f'<div class="chart" id="chart-{html.escape(name)}"></div>'
        for name in specs
    )
    embed = (
        f"const specs = {json.dumps(specs)};\n"
        "for (const [name, spec] of Object.entries(specs)) {\n"
        "  vegaEmbed('#chart-' + name, spec, {actions: false, renderer: 'svg'})\n"
        "    .catch((error) => console.error('chart ' + name + ': ' + error));\n"
        "}\n"
    )
    mode = "--quick" if data["quick"] else "full"
    return "".join(
        [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            "<title>Switchyard stress cycle</title>",
            f"<style>{STYLE}</style></head><body>",
            f"<h1>Switchyard stress cycle ({mode})</h1>",
            f"<p>Started {html.escape(data['started_at'])}, {data['wall_s']} s in all, on {data['machine']['cpus']} "
            f"CPUs. {html.escape(verdict)}</p>",
            "<h2>Phases: measured / gate</h2>",
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
            charts,
            f"<script>{_script_safe(vega_bundle())}</script>",
            f"<script>{_script_safe(embed)}</script>",
            "</body></html>",
        ]
    )


def _script_safe(text: str) -> str:
    return text.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")
