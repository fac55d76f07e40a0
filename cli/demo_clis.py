"""The demo's agent-CLI round: when ``claude`` and ``codex`` are installed (PATH or ``make agent-clis``), one
pr_impl runs through each CLI transport against the simulator, and its pipeline reviews and merges it.

The demo's workers read a copy of the fleet file whose ``pr_impl`` group has the ladder ``codex``, ``claude``,
then its old rungs, with both CLIs on the ``cli`` transport. The first environment's pr_impl runs on the Codex
CLI, the second's avoids Codex (Claude Code), the others avoid both and run as before. Without the CLIs (or
without a ``pr_impl`` group of the usual form) the demo says why and runs everything as before.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cli.render import console
from providers.registry import cli_unavailable
from tasks.context import Context, build_context

CLIS = ("codex", "claude")  # the order of the rungs: the first environment gets the first
GROUP_RE = re.compile(r'^kinds = \["pr_impl"\]\nladder = \[([^\]\n]*)\]\n', re.MULTILINE)


def with_agent_clis(ctx: Context, demo_dir: Path) -> Context:
    """The context whose fleet file routes pr_impl through the agent CLIs (the same context without them)."""
    missing = [reason for name in CLIS if (reason := cli_unavailable(name, ctx.settings)) is not None]
    if missing:
        console.print(f"Agent CLIs: skipped, no pr_impl runs through the cli transport ({'; '.join(missing)})")
        return ctx
    text = ctx.settings.fleet_file.read_text(encoding="utf-8")
    group = GROUP_RE.search(text)
    if group is None or "transports" in text[group.end() : text.find("[[", group.end())]:
        console.print(f"Agent CLIs: skipped, {ctx.settings.fleet_file} has no pr_impl group of the usual form")
        return ctx
    rungs = [r.strip().strip('"') for r in group.group(1).split(",") if r.strip()]
    ladder = ", ".join(f'"{name}"' for name in [*CLIS, *(r for r in rungs if r not in CLIS)])
    transports = ", ".join(f'{name} = "cli"' for name in CLIS)
    replaced = f'kinds = ["pr_impl"]\nladder = [{ladder}]\ntransports = {{ {transports} }}\n'
    path = demo_dir / "fleet-agent-clis.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text[: group.start()] + replaced + text[group.end() :], encoding="utf-8")
    console.print(f"Agent CLIs: pr_impl runs through the real {' and '.join(CLIS)} CLIs (cli transport): {path}")
    return build_context(ctx.settings.model_copy(update={"fleet_file": path}))


def route_batch(ctx: Context, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One pr_impl per CLI: the n-th environment's pr_impl avoids the CLIs before the n-th; later ones all.
    Unchanged when the fleet does not run pr_impl on the CLIs."""
    transports = ctx.fleet.group_for_kind("pr_impl").transports
    if any(transports.get(name) != "cli" for name in CLIS):
        return requests
    impls = [request for request in requests if request["kind"] == "pr_impl"]
    for index, request in enumerate(impls):
        avoided = list(CLIS[: min(index, len(CLIS))])
        if avoided:
            request["avoid_providers"] = [*request.get("avoid_providers", []), *avoided]
    return requests
