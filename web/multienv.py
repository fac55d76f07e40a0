"""``/api/multi-env/*``: the routes the old system's dashboard promised, answered from SQL and the fleet."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from store import queries
from web.deps import ContextDep, SessionDep
from web.health import health as run_health

router = APIRouter(prefix="/api/multi-env", tags=["multi-env"])
Row = dict[str, Any]


@router.get("/status", summary="Environments, groups and task counts at a glance")
def status(context: ContextDep, session: SessionDep) -> Row:
    environments = queries.environment_status(session, context.fleet)
    counts = queries.status_counts(session)
    return {
        "profile": context.settings.profile,
        "generated_at": datetime.now(UTC).isoformat(),
        "tasks": {"total": sum(counts.values()), "by_status": counts},
        "environments": [
            {key: env[key] for key in ("name", "initialized", "branch", "port", "counts")} for env in environments
        ],
        "groups": queries.group_status(session, context.fleet),
    }


@router.get("/directories", summary="Where each environment and stage lives: path, branch, port")
def directories(context: ContextDep, session: SessionDep) -> Row:
    environments = queries.environment_status(session, context.fleet)
    keys = ("name", "initialized", "in_fleet", "path", "branch", "port")
    return {
        "workspace": str(context.settings.workspace_dir),
        "environments": [
            {**{key: env[key] for key in keys}, "stages": [_stage_place(s) for s in env["stages"]]}
            for env in environments
        ],
    }


def _stage_place(stage: Row) -> Row:
    return {"name": stage["name"], "branch": stage["branch"]}


@router.get("/environments", summary="Per environment and stage: task counts and the last result")
def environments(context: ContextDep, session: SessionDep) -> Row:
    return {"environments": queries.environment_status(session, context.fleet)}


@router.get("/pr-groups", summary="The session groups: queue, sessions, kinds, ladder and task counts")
def pr_groups(context: ContextDep, session: SessionDep) -> Row:
    return {"groups": queries.group_status(session, context.fleet)}


@router.get("/health", summary="Database and broker reachability; 200 with ok=false when degraded")
def health(context: ContextDep) -> Row:
    return run_health(context.database_url, context.settings.effective_broker_url, context.settings.health_thresholds)
