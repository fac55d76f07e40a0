"""Cost reports over HTTP (``/api/reports/costs``) and the dashboard's costs view (``/costs``).

The numbers are :func:`reports.report.cost_report`'s, the function ``switchyard report`` calls; bad input is a
422 naming the value and the choices. ``/costs`` draws the report's charts with Vega from the installed
``vl-convert-python`` package, served here (``/costs/vega.js``): the page asks no other host for anything.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from reports import render
from reports.report import cost_report
from web.deps import ContextDep, SessionDep

router = APIRouter(tags=["costs"])
STATIC = Path(__file__).resolve().parent / "static"
Text = Annotated[str | None, Field(max_length=64, pattern=r"^[\x20-\x7e]*$")]


class ReportQuery(BaseModel):
    """The query string of ``GET /api/reports/costs``; an unknown parameter is refused rather than ignored.

    ``since``/``until``: a date, an ISO moment or a duration (``7d``); ``by``: comma-separated keys among env,
    stage, group, kind, provider, model, day, hour; ``baseline``: PROVIDER[:MODEL]; ``charts``: add the charts'
    Vega-Lite specs."""

    model_config = ConfigDict(extra="forbid")

    since: Text = None
    until: Text = None
    by: Text = None
    baseline: Text = None
    format: Literal["json", "csv"] = "json"
    charts: bool = False


@router.get("/api/reports/costs", summary="Spend over a period, grouped, against a baseline, checked with the ledger")
def report_costs(context: ContextDep, session: SessionDep, query: Annotated[ReportQuery, Query()]) -> Any:
    """The same report as ``switchyard report --format json`` (or ``csv``); 422 names a bad value and the choices."""
    asked = query.model_dump(include={"since", "until", "by", "baseline"})
    data = cost_report(session, context.fleet, now=datetime.now(UTC), **asked)
    if query.format == "csv":
        return Response(render.to_csv(data), media_type="text/csv; charset=utf-8")
    if not query.charts:
        return data
    from reports import charts  # noqa: PLC0415 -- altair and its Vega tools (~30 MB): only when charts are asked for

    return {**data, "charts": charts.chart_specs(data)}


def costs_page() -> FileResponse:
    return FileResponse(STATIC / "costs.html", media_type="text/html")


def vega_js() -> Response:
    """Vega, Vega-Lite and Vega-Embed from the installed vl-convert-python package, for ``/costs``."""
    headers = {"Cache-Control": "public, max-age=86400"}
    from reports import charts  # noqa: PLC0415 -- see report_costs

    return Response(charts.vega_bundle(), media_type="text/javascript; charset=utf-8", headers=headers)
