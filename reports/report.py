"""The cost report: the one function behind ``switchyard report`` and ``GET /api/reports/costs``.

:func:`cost_report` parses what was typed (period, keys, baseline), rolls the period up in SQL by the keys and
in total (from the hourly roll-up, :mod:`reports.rollup`), checks the total against the ledger's settled spend,
reprices at the baseline, and adds the budgets' forward view, the peak hour, the dearest tasks, the cost per kind
and the series the charts draw. The answer is plain JSON-ready data; money is integer micro-dollars
(``*_micros``) and exact decimal strings (``*_usd``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import FromClause

from reports.baseline import Baseline, resolve
from reports.forward import budget_forward, peak_hour, top_tasks
from reports.period import Period, parse_keys, parse_period
from reports.rollup import EDGES_TABLE, FACTS_TABLE, TOKENS, Line, cost_by, ledger_settled, materialize, rollup
from switchyard.errors import InputError
from switchyard.fleet import Fleet

Row = dict[str, Any]
MICRO = Decimal("0.000001")
WORK_MEM = "256MB"
COLUMNS = (
    "tasks",
    "attempts",
    "succeeded",
    "fell_back",
    *(name for name, _ in TOKENS),
    "ollama_compute_s",
    "cost_usd",
    "share_pct",
    "cost_per_succeeded_usd",
    "baseline_usd",
    "saving_usd",
    "saving_pct",
)


def usd(micros: int | Decimal) -> str:
    """Micro-dollars as exact USD text with six decimals (rounded half-up when a baseline has a fraction)."""
    return str((Decimal(micros) / 1_000_000).quantize(MICRO, rounding=ROUND_HALF_UP))


def _pct(part: Decimal, whole: Decimal) -> float | None:
    return None if whole == 0 else float((100 * part / whole).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def flags(line: Line, fleet: Fleet) -> list[str]:
    out = []
    if line.sums["unknown_cost_attempts"]:
        out.append(
            f"unknown cost: {line.sums['unknown_cost_attempts']} attempt(s) charged at their hold "
            f"(${usd(line.sums['unknown_cost_micros'])})"
        )
    if line.sums["zero_cost_paid_attempts"]:
        out.append(f"tokens at $0 on a paid provider: {line.sums['zero_cost_paid_attempts']} attempt(s)")
    return out


def line_row(line: Line, total_micros: int, baseline: Baseline, fleet: Fleet) -> Row:
    sums = line.sums
    cost = sums["cost_micros"]
    base = baseline.micros(sums)
    return {
        **line.keys,
        **{name: sums[name] for name in ("tasks", "attempts", "succeeded", "fell_back")},
        **{name: sums[name] for name, _ in TOKENS},
        "ollama_compute_s": round(line.compute_seconds, 1),
        "cost_micros": cost,
        "cost_usd": usd(cost),
        "share_pct": _pct(Decimal(cost), Decimal(total_micros)),
        "cost_per_succeeded_usd": usd(Decimal(cost) / sums["succeeded"]) if sums["succeeded"] else None,
        "baseline_usd": usd(base),
        "saving_usd": usd(base - cost),
        "saving_pct": _pct(base - cost, base),
        "unknown_cost_attempts": sums["unknown_cost_attempts"],
        "unknown_cost_usd": usd(sums["unknown_cost_micros"]),
        "zero_cost_paid_attempts": sums["zero_cost_paid_attempts"],
        "flags": flags(line, fleet),
    }


@dataclass(frozen=True)
class _Run:
    """One report's inputs: every roll-up reads the same roll-up rows, copied once (:func:`materialize`)."""

    session: Session
    fleet: Fleet
    period: Period
    baseline: Baseline
    source: FromClause

    def lines(self, keys: Sequence[str]) -> list[Line]:
        return rollup(self.session, self.fleet, self.period, keys, source=self.source)

    def grouped(self, keys: Sequence[str]) -> list[Row]:
        lines = self.lines(keys)
        total = sum(line.sums["cost_micros"] for line in lines)
        return [line_row(line, total, self.baseline, self.fleet) for line in lines]


def _series(run: _Run, per_group: list[Row]) -> Row:
    per_day = cost_by(run.session, run.source, ("day", "provider"))
    return {
        "day_provider": [{**keys, "cost_usd": float(usd(cost))} for keys, cost, attempts in per_day if attempts],
        "group": [
            {"group": r["group"], "actual_usd": float(r["cost_usd"]), "baseline_usd": float(r["baseline_usd"])}
            for r in per_group
        ],
    }


def cost_report(
    session: Session,
    fleet: Fleet,
    *,
    now: datetime,
    since: str | None = None,
    until: str | None = None,
    by: str | None = None,
    baseline: str | None = None,
) -> Row:
    """The report over ``[since, until)`` grouped by ``by`` (``env,provider``...), repriced at ``baseline``.

    Bad input raises :class:`InputError` naming the value and the choices; an empty period is all zeros."""
    keys = parse_keys(by)
    period = parse_period(since, until, now)
    base = resolve(fleet, baseline, min(period.until, now).date())
    if session.get_bind().dialect.name == "postgresql":  # the per-task grouping fits in memory, not on disk
        session.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
        # JIT-compiling the facts query cost up to 4.7 s of 18 s on 1M attempts (EXPLAIN ANALYZE), more than it
        # saved: a report's queries are one-off scans, not hot loops
        session.execute(text("SET LOCAL jit = off"))
    run = _Run(session, fleet, period, base, materialize(session, fleet, period))
    total_row = run.grouped(())[0]
    rows = run.grouped(keys) if keys else []
    per_group = rows if tuple(keys) == ("group",) else run.grouped(("group",))
    settled = ledger_settled(session, period)
    report = {
        "since": period.since.isoformat(),
        "until": period.until.isoformat(),
        "by": list(keys),
        "columns": list(COLUMNS),
        "rows": rows,
        "total": total_row,
        "ledger": {
            "settled_usd": usd(settled),
            "settled_micros": settled,
            "reconciled": settled == total_row["cost_micros"],
        },
        "baseline": {"provider": base.provider, "model": base.model, "version": base.version, "how": base.how},
        "flags": total_row["flags"],
        "budgets": budget_forward(session, fleet, now),
        "peak_hour": peak_hour(session, period),
        "top_tasks": top_tasks(session, period),
        "by_kind": [
            {"kind": r["kind"], "cost_usd": r["cost_usd"], "tasks": r["tasks"], "share_pct": r["share_pct"]}
            for r in run.grouped(("kind",))
        ],
        "series": _series(run, per_group),
    }
    for table in (FACTS_TABLE, EDGES_TABLE):  # a pooled connection does not keep the rows
        session.execute(text(f"DROP TABLE {table}"))
    return report


__all__ = ["COLUMNS", "InputError", "cost_report", "usd"]
