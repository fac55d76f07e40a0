"""The fleet file (``switchyard.toml``) as validated data: environments, groups, providers, prices, policies.

:func:`load_fleet` reads the file, overlays the selected profile, validates every entry and checks the
entries against each other (a ladder naming an unknown provider, a kind without a group). Every mistake is a
:class:`ConfigError` naming the file, the line, the key and what is allowed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from switchyard.errors import ConfigError
from switchyard.fleet_models import (
    CLI_KINDS,
    DB_KEPT_MAX,
    DB_MAX_OVERFLOW,
    DB_POOL_SIZE,
    DB_RESERVED,
    KINDS,
    POSTGRES_DEFAULT_CONNECTIONS,
    BreakerPolicy,
    BudgetConfig,
    EnvironmentsConfig,
    Fleet,
    GroupConfig,
    Kind,
    KindConfig,
    LimitsConfig,
    ModelConfig,
    Price,
    ProviderConfig,
    RetryPolicy,
    Scope,
    SimulatorProviderConfig,
    Transport,
    Window,
)

__all__ = [
    "KINDS",
    "BreakerPolicy",
    "BudgetConfig",
    "EnvironmentsConfig",
    "Fleet",
    "GroupConfig",
    "Kind",
    "KindConfig",
    "LimitsConfig",
    "ModelConfig",
    "Price",
    "ProviderConfig",
    "RetryPolicy",
    "Scope",
    "SimulatorProviderConfig",
    "Transport",
    "Window",
    "cross_check",
    "load_fleet",
    "locate",
]
Loc = tuple[str | int, ...]


def cross_check(fleet: Fleet) -> list[tuple[Loc, str]]:
    """Entries that are each valid but disagree with each other, as (location, message) pairs."""
    problems: list[tuple[Loc, str]] = []
    known = sorted(fleet.providers)
    seen_kinds: dict[str, str] = {}
    for gi, group in enumerate(fleet.groups):
        for ri, rung in enumerate(group.ladder):
            if rung not in fleet.providers:
                problems.append((("groups", gi, "ladder", ri), f"unknown provider {rung!r}; allowed: {known}"))
        for kind in group.kinds:
            if kind in seen_kinds:
                problems.append((("groups", gi, "kinds"), f"kind {kind!r} is already run by {seen_kinds[kind]!r}"))
            seen_kinds[kind] = group.name
        for provider in group.models:
            if provider not in group.ladder:
                problems.append((("groups", gi, "models", provider), f"{provider!r} is not in this group's ladder"))
        problems += _group_transports(fleet, gi)
        problems += _ladder(fleet, gi)
        problems += _sessions(fleet, gi)
    problems += _connections(fleet)
    problems += _duplicates([(("groups", i, "name"), g.name) for i, g in enumerate(fleet.groups)], "group name")
    problems += _duplicates([(("groups", i, "queue"), g.queue) for i, g in enumerate(fleet.groups)], "queue")
    for name in KINDS:
        if name not in seen_kinds:
            problems.append((("groups",), f"kind {name!r} has no group; add it to one group's kinds"))
    for name in fleet.simulator:
        if name not in fleet.providers:
            problems.append((("simulator", name), f"unknown provider {name!r}; allowed: {known}"))
    problems += _budget_targets(fleet)
    try:
        fleet.baseline_model(fleet.reports.baseline)
    except ValueError as exc:
        problems.append((("reports", "baseline"), str(exc)))
    return problems


def _group_transports(fleet: Fleet, gi: int) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    for provider, transport in fleet.groups[gi].transports.items():
        loc: Loc = ("groups", gi, "transports", provider)
        if provider not in fleet.providers:
            problems.append((loc, f"unknown provider {provider!r}; allowed: {sorted(fleet.providers)}"))
        elif transport not in fleet.providers[provider].transports:
            problems.append(
                (loc, f"{provider!r} has no {transport!r} transport; it has {fleet.providers[provider].transports}")
            )
    return problems


def rung_problem(fleet: Fleet, group: GroupConfig, provider: str, kind: str) -> str | None:
    """Why ``provider`` cannot serve ``kind`` in ``group`` whatever happens at run time, or None."""
    if provider not in fleet.providers:
        return f"unknown provider {provider!r}"
    transport = group.transports.get(provider, "api")
    if transport not in fleet.providers[provider].transports:
        return f"{provider!r} has no {transport!r} transport"
    if transport == "cli" and kind not in CLI_KINDS:
        return (
            f"{provider!r} on the 'cli' transport cannot serve {kind!r}: an agent CLI needs a worktree to edit, "
            f'which only {", ".join(CLI_KINDS)} give it; use {provider} = "api" or move {kind!r} to another group'
        )
    return None


def _ladder(fleet: Fleet, gi: int) -> list[tuple[Loc, str]]:
    """A rung whose transport cannot serve one of the group's kinds, a rung named twice, and a kind that no
    rung of the ladder can serve."""
    group = fleet.groups[gi]
    problems: list[tuple[Loc, str]] = []
    problems += _duplicates([(("groups", gi, "ladder", ri), p) for ri, p in enumerate(group.ladder)], "rung")
    for provider, transport in group.transports.items():
        if provider not in group.ladder:
            problems.append((("groups", gi, "transports", provider), f"{provider!r} is not in this group's ladder"))
            continue
        refused = [kind for kind in group.kinds if transport == "cli" and kind not in CLI_KINDS]
        if refused and provider in fleet.providers:
            why = rung_problem(fleet, group, provider, refused[0])
            problems.append((("groups", gi, "transports", provider), why or ""))
    for kind in group.kinds:
        whys = [f"{p}: {why}" for p in group.ladder if (why := rung_problem(fleet, group, p, kind))]
        if len(whys) == len(group.ladder):
            problems.append((("groups", gi, "ladder"), f"no rung of the ladder can serve {kind!r} ({'; '.join(whys)})"))
    return problems


def connections_needed(sessions: int) -> int:
    """The database connections one worker process with ``sessions`` threads may hold at once."""
    return sessions + min(sessions, DB_KEPT_MAX) + DB_RESERVED


def _sessions(fleet: Fleet, gi: int) -> list[tuple[Loc, str]]:
    sessions = fleet.groups[gi].sessions
    pool = DB_POOL_SIZE + DB_MAX_OVERFLOW
    if connections_needed(sessions) <= pool:
        return []
    most = max(n for n in range(1, sessions) if connections_needed(n) <= pool)
    return [
        (
            ("groups", gi, "sessions"),
            f"{sessions} sessions need up to {connections_needed(sessions)} database connections in the group's "
            f"worker, more than its pool serves ({DB_POOL_SIZE} + {DB_MAX_OVERFLOW} overflow); at most {most} "
            "sessions per group: split the group, or run more workers of it",
        )
    ]


def _connections(fleet: Fleet) -> list[tuple[Loc, str]]:
    total = sum(connections_needed(g.sessions) for g in fleet.groups)
    if total <= POSTGRES_DEFAULT_CONNECTIONS:
        return []
    per_group = ", ".join(f"{g.name} {connections_needed(g.sessions)}" for g in fleet.groups)
    return [
        (
            ("groups",),
            f"the groups' sessions need up to {total} database connections together ({per_group}), more than "
            f"PostgreSQL serves by default ({POSTGRES_DEFAULT_CONNECTIONS} of max_connections = 100); lower "
            "sessions",
        )
    ]


def _duplicates(entries: list[tuple[Loc, str]], what: str) -> list[tuple[Loc, str]]:
    seen: set[str] = set()
    out: list[tuple[Loc, str]] = []
    for loc, value in entries:
        if value in seen:
            out.append((loc, f"{what} {value!r} is used twice"))
        seen.add(value)
    return out


def _budget_targets(fleet: Fleet) -> list[tuple[Loc, str]]:
    allowed: dict[str, list[str]] = {
        "environment": fleet.environments.names,
        "stage": fleet.environments.stages,
        "group": [g.name for g in fleet.groups],
        "provider": sorted(fleet.providers),
    }
    problems: list[tuple[Loc, str]] = []
    for bi, budget in enumerate(fleet.budgets):
        if budget.scope == "all":
            if budget.target != "*":
                problems.append((("budgets", bi, "target"), "scope 'all' takes no target; remove it or use '*'"))
        elif budget.target != "*" and budget.target not in allowed[budget.scope]:
            problems.append(
                (
                    ("budgets", bi, "target"),
                    f"unknown {budget.scope} {budget.target!r}; allowed: {allowed[budget.scope]}",
                )
            )
    return problems


def locate(text: str, loc: Loc) -> int | None:
    """The 1-based line in ``text`` that declares ``loc`` (or its nearest declared parent)."""
    lines: dict[tuple[str, ...], int] = {}
    counters: dict[tuple[str, ...], int] = {}
    current: tuple[str, ...] = ()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("[["):
            path = tuple(part.strip() for part in line.strip("[] ").split("."))
            counters[path] = counters.get(path, -1) + 1
            current = (*path, str(counters[path]))
        elif line.startswith("["):
            current = tuple(part.strip() for part in line.strip("[] ").split("."))
        elif "=" in line and not line.startswith("#"):
            key = tuple(part.strip().strip('"') for part in line.split("=", 1)[0].split("."))
            current_key = (*current, *key)
            for i in range(1, len(current_key) + 1):
                lines.setdefault(current_key[:i], number)
            continue
        else:
            continue
        for i in range(1, len(current) + 1):
            lines.setdefault(current[:i], number)
    wanted = tuple(str(part) for part in loc)
    for end in range(len(wanted), 0, -1):
        if wanted[:end] in lines:
            return lines[wanted[:end]]
    return None


def _where(path: Path, text: str, loc: Loc) -> str:
    line = locate(text, loc)
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(top level)"
    return f"{path}:{line}: {key}" if line else f"{path}: {key}"


def _overlay(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _overlay(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_fleet(path: Path, profile: str = "development") -> Fleet:
    """Read, overlay ``profile`` and validate the fleet file; every mistake is a ConfigError with file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read fleet file {path}: {exc.strerror}; set SWITCHYARD_FLEET_FILE") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    profiles = raw.pop("profiles", {})
    if profile not in profiles and profiles:
        raise ConfigError(f"{path}: profile {profile!r} is not defined; defined: {sorted(profiles)}")
    overlay = dict(profiles.get(profile, {}))
    merged = _overlay(raw, overlay)
    merged.update(profile=profile, source=str(path))
    try:
        fleet = Fleet.model_validate(merged)
    except ValidationError as exc:
        messages = [f"{_where(path, text, err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("invalid fleet file:\n  " + "\n  ".join(messages)) from None
    problems = cross_check(fleet)
    if problems:
        raise ConfigError(
            "invalid fleet file:\n  " + "\n  ".join(f"{_where(path, text, loc)}: {msg}" for loc, msg in problems)
        )
    return fleet
