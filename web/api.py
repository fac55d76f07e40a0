"""Tasks, costs and budgets over HTTP: submit and list tasks, read one, read the money."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi import status as http
from pydantic import BaseModel, ConfigDict, Field

from routing.state import providers_view
from store import costs as money
from store import queries
from switchyard.errors import NotFound
from tasks.context import Context
from web.deps import ContextDep, SessionDep

router = APIRouter(prefix="/api", tags=["tasks"])
Row = dict[str, Any]


def _submit_schema() -> Row:
    """The request body's JSON schema for the docs, when ``tasks.schemas`` is there to describe it."""
    try:
        from tasks.schemas import SubmitRequest  # noqa: PLC0415 - optional: the docs work without it
    except ImportError:
        return {"type": "object"}
    schema: Row = SubmitRequest.model_json_schema()
    return schema


@router.post(
    "/tasks",
    status_code=http.HTTP_202_ACCEPTED,
    summary="Submit a task; answers 202 with its id once it is queued",
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": _submit_schema()}}}},
)
def submit_task(context: ContextDep, body: Annotated[Row, Body()]) -> Row:
    return {"id": _submit(body, context)}


def _submit(body: Row, context: Context) -> str:
    # Imported per call so this module loads (and the rest of the API works) without the submission side.
    from tasks.schemas import parse_request  # noqa: PLC0415
    from tasks.submit import submit  # noqa: PLC0415

    task_id: str = submit(parse_request(body), context=context)  # InputError -> 422, ServiceUnavailable -> 503
    return task_id


class TaskFilter(BaseModel):
    """The query string of ``GET /api/tasks``; an unknown parameter is refused rather than ignored."""

    model_config = ConfigDict(extra="forbid")

    environment: str | None = None
    stage: str | None = None
    status: str | None = None
    kind: str | None = None
    group: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)


@router.get("/tasks", summary="Tasks, newest first, filtered by environment, stage, status, kind or group")
def list_tasks(session: SessionDep, filters: Annotated[TaskFilter, Query()]) -> Row:
    tasks = queries.list_tasks(session, **filters.model_dump())
    return {"count": len(tasks), "tasks": tasks}


@router.get("/tasks/{task_id}", summary="One task with its attempts, result, children and parent")
def get_task(session: SessionDep, task_id: str) -> Row:
    detail = queries.task_detail(session, task_id)
    if detail is None:
        raise NotFound(f"no task with id {task_id!r}; list tasks with GET /api/tasks")
    return detail


@router.get("/costs", tags=["costs"], summary="Usage and spend by provider, group and environment")
def costs(session: SessionDep, since: datetime | None = None) -> Row:
    return money.costs(session, since=since)


@router.get("/budgets", tags=["costs"], summary="Each budget in force with its spend so far in the current window")
def budgets(context: ContextDep, session: SessionDep) -> Row:
    """The same rows as ``switchyard budget list --json``: the fleet file's budgets overlaid by overrides."""
    return {"budgets": money.budget_status(session, context.fleet)}


@router.get("/breakers", tags=["providers"], summary="Each provider's breaker, failures, in-flight calls and rate")
def breakers(context: ContextDep) -> Row:
    """The same rows as ``switchyard status --providers --json``; 503 when the state Redis is away."""
    return {"providers": providers_view(context.settings.effective_state_url, context.fleet)}
