"""The report as text rows for a table, as CSV, and the short lines beside it. Pure: a report dict in, text out."""

from __future__ import annotations

import csv
import io
from typing import Any

Row = dict[str, Any]
HEADERS = {
    "tasks": "tasks",
    "attempts": "attempts",
    "succeeded": "succeeded",
    "fell_back": "fell back",
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_tokens": "cache read",
    "cache_write_5m_tokens": "cache write 5m",
    "cache_write_1h_tokens": "cache write 1h",
    "reasoning_tokens": "reasoning",
    "ollama_compute_s": "ollama s",
    "cost_usd": "cost $",
    "share_pct": "share %",
    "cost_per_succeeded_usd": "$/succeeded",
    "baseline_usd": "baseline $",
    "saving_usd": "saving $",
    "saving_pct": "saving %",
}
SAVINGS = ("tasks", "succeeded", "cost_usd", "baseline_usd", "saving_usd", "saving_pct")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table_rows(report: Row, columns: tuple[str, ...] | None = None) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (the totals line last) of the main table; ``columns`` picks some of them."""
    keys: list[str] = report["by"]
    names = list(columns or report["columns"])
    headers = [*keys, *(HEADERS[name] for name in names), "flags"]
    rows = [
        [*(row[k] for k in keys), *(_cell(row[n]) for n in names), "; ".join(row["flags"])] for row in report["rows"]
    ]
    total = report["total"]
    first = ["total", *([""] * (len(keys) - 1))] if keys else []
    rows.append([*first, *(_cell(total[n]) for n in names), "; ".join(total["flags"])])
    return ([*headers] if keys else headers), rows


def to_csv(report: Row) -> str:
    """The main table as CSV: one line per group and a last line ``total``; numbers unformatted, exact."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    keys, names = report["by"], report["columns"]
    writer.writerow([*keys, *names, "unknown_cost_attempts", "zero_cost_paid_attempts", "flags"])
    for row in [*report["rows"], {**report["total"], **dict.fromkeys(keys, "total")}]:
        extra = [row["unknown_cost_attempts"], row["zero_cost_paid_attempts"], "; ".join(row["flags"])]
        writer.writerow([*(row[k] for k in keys), *("" if row[n] is None else row[n] for n in names), *extra])
    return out.getvalue()


def summary_lines(report: Row) -> list[str]:
    """The lines under the table: the period, the ledger check, the baseline, the saving, the peak hour."""
    total, ledger = report["total"], report["ledger"]
    check = "reconciled" if ledger["reconciled"] else "DOES NOT MATCH"
    lines = [
        f"Period {report['since']} .. {report['until']} (UTC). Ledger settled ${ledger['settled_usd']}: {check}.",
        report["baseline"]["how"],
        f"Actual ${total['cost_usd']} against baseline ${total['baseline_usd']}: saved ${total['saving_usd']}"
        + (f" ({total['saving_pct']}%)." if total["saving_pct"] is not None else "."),
    ]
    peak = report["peak_hour"]
    if peak:
        lines.append(
            f"Peak hour {peak['hour']} UTC: ${peak['cost_micros'] / 1e6:.6f} over {peak['attempts']} attempts."
        )
    lines += [f"Flag: {flag}" for flag in report["flags"]]
    return lines


def budget_rows(report: Row) -> tuple[list[str], list[list[str]]]:
    headers = ["budget", "cap $", "alert $", "used $", "held $", "left $", "used %", "alerts", "at cap", "rate $/h"]
    headers += ["window end $", "month end $", "cap reached"]
    rows = []
    for b in report["budgets"]:
        reach = b["cap_reached_at"] or "not at this rate"
        if b["cap_reached_at"] and b["cap_reached_in_window"]:
            reach += " (IN THIS WINDOW)"
        money = [b["cap_micros"], b["alert_micros"], b["used_micros"], b["held_micros"], b["remaining_micros"]]
        rows.append(
            [
                f"{b['scope']} {b['target']} {b['window']}",
                *("" if m is None else f"{m / 1e6:.4f}" for m in money),
                f"{b['used_pct']}",
                str(b["alerts_fired"]),
                b["action"],
                f"{b['rate_micros_per_h'] / 1e6:.4f}",
                f"{b['projected_window_micros'] / 1e6:.4f}",
                f"{b['projected_month_micros'] / 1e6:.4f}",
                reach,
            ]
        )
    return headers, rows


def top_rows(report: Row) -> tuple[list[str], list[list[str]]]:
    headers = ["task", "kind", "env", "status", "provider", "attempts", "cost $", "title"]
    rows = [
        [
            t["id"][:8],
            t["kind"],
            t["env"],
            t["status"],
            t["provider"] or "",
            str(t["attempts"]),
            f"{t['cost_micros'] / 1e6:.6f}",
            t["title"],
        ]
        for t in report["top_tasks"]
    ]
    return headers, rows
