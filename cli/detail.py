"""``switchyard tasks show``: one task for people, with the pipeline chain it belongs to.

The chain is printed as a tree from its root (the task asked about is marked ``◀``), each task with its
status, provider and outcome, and its dependencies by short id; then the task's attempts (with each try inside
an attempt: when, how long, how it ended) and results per (environment, stage), and the chain's reviews
(verdict and comments) and merges (commit and check).
"""

from __future__ import annotations

from typing import Any

from cli.render import console, table, usd
from store.names import ACTIVE_STATUSES, TERMINAL_STATUSES

Row = dict[str, Any]
HEADER = ("id", "kind", "group", "environment", "stage", "status", "title", "provider", "model", "reason")


def show_detail(detail: Row) -> None:
    for key in HEADER:
        if detail.get(key):
            console.print(f"[bold]{key}[/bold]: {detail[key]}")
    console.print(f"[bold]cost[/bold]: {usd(detail.get('cost_usd'))}")
    payload = detail.get("payload") or {}
    for key in ("branch", "round", "review_of", "implementer", "base_branches"):
        if payload.get(key) and not (key == "round" and payload[key] == 1):
            console.print(f"[bold]{key}[/bold]: {payload[key]}")
    for key, label in (("depends_on", "depends on"), ("dependents", "needed by")):
        if detail.get(key):
            console.print(f"[bold]{label}[/bold]: " + ", ".join(_short(t) for t in detail[key]))
    _attempts(detail.get("attempts") or [])
    _results(detail)
    _chain(detail.get("chain") or [])
    _reviews(detail.get("reviews") or [])
    _merges(detail.get("merges") or [])
    _actions(detail.get("actions") or [], detail["id"], detail["status"])
    _stopped(detail.get("chain") or [], detail["id"], detail["status"])


def stopped_links(chain: list[Row]) -> list[Row]:
    """Pure: the links where the chain stopped: ended without success, with nothing after them in the chain."""
    parents = {link.get("parent_id") for link in chain}
    return [
        link
        for link in chain
        if link["status"] in TERMINAL_STATUSES and link["status"] != "succeeded" and link["id"] not in parents
    ]


def _stopped(chain: list[Row], task_id: str, status: str) -> None:
    """A task that succeeded while its chain stopped further on (a review out of budget): how to go on."""
    stopped = [link for link in stopped_links(chain) if link["id"] != task_id]
    if status != "succeeded" or not stopped:
        return
    where = ", ".join(f"{link['kind']} {link['id'][:8]} ({link['status']})" for link in stopped)
    console.print(
        f"its chain stopped at {where}; to go on: switchyard tasks resume {task_id[:8]}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _actions(actions: list[Row], task_id: str, status: str) -> None:
    """Retries and cancels done to the task, and what can be done to it now."""
    if actions:
        rows = ((a["at"][:19].replace("T", " "), a["action"], a["by"], a["from_status"], a["from_reason"] or "")
                for a in actions)  # fmt: skip
        console.print(table("Actions (UTC)", ("at", "action", "by", "was", "reason it had"), rows))
    if status in ACTIVE_STATUSES:
        console.print(f"to stop it: switchyard tasks cancel {task_id[:8]}", markup=False, highlight=False)
    elif status != "succeeded":
        console.print(
            f"to run it again: switchyard tasks retry {task_id[:8]}  (its pipeline: switchyard tasks resume "
            f"{task_id[:8]})",
            markup=False,
            highlight=False,
        )


def _short(task: Row) -> str:
    return f"{task['id'][:8]} {task['kind']} {task['status']}"


def _attempts(attempts: list[Row]) -> None:
    from store.costs import UNKNOWN_COST  # SQLAlchemy: only when a task is shown

    if not attempts:
        return
    columns = ("#", "provider", "model", "status", "in", "out", "cost", "error")
    rows = (
        (
            a.get("attempt"),
            a["provider"],
            a["model"],
            a["status"],
            a.get("input_tokens"),
            a.get("output_tokens"),
            usd(a.get("cost_usd")) + (" unknown cost" if a.get("price_version") == UNKNOWN_COST else ""),
            a.get("error") or "",
        )
        for a in attempts
    )
    console.print(table("Attempts", columns, rows))
    _tries(attempts)
    if any(a.get("price_version") == UNKNOWN_COST for a in attempts):
        console.print("unknown cost: a call its worker left open, charged at the amount held for it", soft_wrap=True)
    for a in attempts:  # why the router did not take the providers before this one (breaker, budget, busy...)
        if a.get("route_note"):
            console.print(
                f"attempt {a.get('attempt')} on {a['provider']}, passed over: {a['route_note']}", soft_wrap=True
            )


def _tries(attempts: list[Row]) -> None:
    """Each call of the provider inside each attempt (tenacity's tries), in order."""
    rows = [
        (a.get("attempt"), t["try"], a["provider"], _clock(t["started_at"]), _took(t), t["status"], _error(t))
        for a in attempts
        for t in a.get("tries") or []
    ]
    if rows:
        console.print(table("Tries (UTC)", ("attempt", "try", "provider", "started", "took", "status", "error"), rows))


def _clock(iso: str) -> str:
    return iso[11:23]  # HH:MM:SS.mmm of an ISO time in UTC


def _took(attempt_try: Row) -> str:
    ms: float = attempt_try["duration_ms"]
    return f"{ms / 1000:.2f}s" if ms >= 1000 else f"{ms:.0f}ms"


def _error(attempt_try: Row) -> str:
    if attempt_try["status"] == "succeeded":
        return ""
    status = f" (HTTP {attempt_try['http_status']})" if attempt_try.get("http_status") else ""
    return f"{attempt_try['error_class']}{status}: {attempt_try.get('error') or ''}"


def _results(detail: Row) -> None:
    results = detail.get("results") or ([detail["result"]] if detail.get("result") else [])
    for result in results:
        console.print(
            f"[bold]result[/bold] ({result['environment']}/{result['stage']}): {result.get('summary')}", soft_wrap=True
        )


def _chain(chain: list[Row]) -> None:
    if len(chain) < 2:
        return
    console.print("[bold]Chain[/bold]")
    for node in chain:
        deps = f" after {', '.join(d[:8] for d in node['depends_on'])}" if node["depends_on"] else ""
        mark = "  ◀" if node["this"] else ""
        who = f" [{node['provider']}]" if node.get("provider") else ""
        line = f"{'  ' * node['depth']}{node['id'][:8]} {node['kind']} {node['status']}{who}{deps}"
        summary = f": {node['summary'][:100]}" if node["summary"] else ""
        console.print(line + summary + mark, markup=False, highlight=False, soft_wrap=True)


def _reviews(reviews: list[Row]) -> None:
    if not reviews:
        return
    rows = (
        (r["task_id"][:8], r["round"], r["reviewer"], r["verdict"], r["branch"], r["summary"][:120]) for r in reviews
    )
    console.print(table("Reviews", ("task", "round", "reviewer", "verdict", "branch", "summary"), rows))
    for review in reviews:
        for comment in review["comments"]:
            console.print(
                f"  {review['task_id'][:8]} {comment['file']}:{comment['line']}: {comment['body']}", markup=False
            )


def _merges(merges: list[Row]) -> None:
    if not merges:
        return
    columns = ("task", "branch", "target", "status", "merge commit", "check", "conflicts")
    rows = (
        (
            m["task_id"][:8],
            m["branch"],
            m["target"],
            m["status"],
            (m["merge_sha"] or "")[:10],
            _check(m),
            ", ".join(m["conflict_files"]) + (f" (by {m['resolved_by']})" if m["resolved_by"] else ""),
        )
        for m in merges
    )
    console.print(table("Merges", columns, rows))


def _check(merge: Row) -> str:
    check = merge.get("check") or {}
    if not check:
        return ""
    verdict = "passed" if check.get("passed") else f"failed (exit {check.get('exit_code')})"
    return f"{check.get('command')}: {verdict}"
