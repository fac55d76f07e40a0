"""Tasks, costs and budgets over HTTP: submit and list tasks, read one, read the money."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from fastapi import status as http
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from routing.state import providers_view
from store import costs as money
from store import queries
from store.models import Environment
from switchyard import traces
from switchyard.errors import NotFound
from switchyard.fleet import Kind
from tasks import actions
from tasks.schemas import Name, ShortName, SubmitRequest, TaskRef, parse_request
from tasks.submit import submit
from web.auth import SUBMIT
from web.deps import NOT_FOUND, ContextDep, SessionDep
from web.diffs import task_diff

router = APIRouter(prefix="/api", tags=["tasks"])
Row = dict[str, Any]


@router.post(
    "/tasks",
    status_code=http.HTTP_202_ACCEPTED,
    summary="Submit a task; answers 202 with its id once it is queued",
    dependencies=[SUBMIT],
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": SubmitRequest.model_json_schema()}}}},
)
def submit_task(context: ContextDep, body: Annotated[Row, Body()]) -> Row:
    """Every check runs before anything is written: 422 says what is wrong, 503 that the broker is away."""
    with traces.span("submit", kind=str(body.get("kind", ""))) as span:  # the task's trace starts here
        task_id = submit(parse_request(body), context=context)
        traces.annotate(span, task_id=task_id)
    return {"id": task_id}


class TaskFilter(BaseModel):
    """The query string of ``GET /api/tasks``; an unknown parameter is refused rather than ignored."""

    model_config = ConfigDict(extra="forbid")

    environment: Name | None = None
    stage: Name | None = None
    status: ShortName | None = None
    kind: Kind | None = None
    group: Name | None = None
    limit: int = Field(default=100, ge=1, le=1000)


def _utc(moment: datetime) -> datetime:
    """``since`` in UTC; a moment that has none (year 1 at +14:00) is refused, not left to fail in SQL."""
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the years 1-9999 once taken to UTC") from None


Since = Annotated[datetime, AfterValidator(_utc)]


@router.get("/tasks", summary="Tasks, newest first, filtered by environment, stage, status, kind or group")
def list_tasks(session: SessionDep, filters: Annotated[TaskFilter, Query()]) -> Row:
    tasks = queries.list_tasks(session, **filters.model_dump())
    return {"count": len(tasks), "tasks": tasks}


@router.get("/tasks/{task_id}", summary="One task with its attempts, result, children and parent", responses=NOT_FOUND)
def get_task(session: SessionDep, task_id: Annotated[TaskRef, Path()]) -> Row:
    detail = queries.task_detail(session, task_id)
    if detail is None:
        raise NotFound(f"no task with id {task_id!r}; list tasks with GET /api/tasks")
    return detail


@router.get(
    "/tasks/{task_id}/diff", summary="The change a task made, merged or reviewed, as a git diff", responses=NOT_FOUND
)
def get_task_diff(context: ContextDep, session: SessionDep, task_id: Annotated[TaskRef, Path()]) -> Row:
    """``range`` is None when the task has no change to show (a plan, a task that ended before committing)."""
    detail = queries.task_detail(session, task_id)
    if detail is None:
        raise NotFound(f"no task with id {task_id!r}; list tasks with GET /api/tasks")
    env = session.get(Environment, detail["environment"])
    if env is None:
        return {"range": None, "diff": "", "truncated": False, "error": "its environment is not initialized"}
    return task_diff(env.path, detail, first_stage=context.fleet.environments.stages[0])


@router.get("/costs", tags=["costs"], summary="Usage and spend by provider, group and environment")
def costs(session: SessionDep, since: Since | None = None) -> Row:
    return money.costs(session, since=since)


@router.get("/budgets", tags=["costs"], summary="Each budget in force with its spend so far in the current window")
def budgets(context: ContextDep, session: SessionDep) -> Row:
    """The same rows as ``switchyard budget list --json``: the fleet file's budgets overlaid by overrides."""
    return {"budgets": money.budget_status(session, context.fleet)}


@router.get("/breakers", tags=["providers"], summary="Each provider's breaker, failures, in-flight calls and rate")
def breakers(context: ContextDep) -> Row:
    """The same rows as ``switchyard status --providers --json``; 503 when the state Redis is away."""
    return {"providers": providers_view(context.settings.effective_state_url, context.fleet)}


def _done(done: actions.Done) -> Row:
    return {
        "id": done.task_id,
        "action": done.action,
        "from": done.from_status,
        "status": done.status,
        "note": done.note,
    }


@router.post(
    "/tasks/{task_id}/retry",
    summary="Run a task that ended without success again; its pipeline goes on",
    responses=NOT_FOUND,
    dependencies=[SUBMIT],
)
def retry_task(context: ContextDep, task_id: Annotated[TaskRef, Path()]) -> Row:
    """422 when the task has not ended without success. Charges already made stay and are not made again."""
    return _done(actions.retry(context, task_id, by="http"))


@router.post(
    "/tasks/{task_id}/cancel",
    summary="Cancel a queued, deferred or running task",
    responses=NOT_FOUND,
    dependencies=[SUBMIT],
)
def cancel_task(context: ContextDep, task_id: Annotated[TaskRef, Path()]) -> Row:
    """422 when the task has already ended. Holds of calls not in progress are released; the worktree is kept."""
    return _done(actions.cancel(context, task_id, by="http"))


@router.post(
    "/tasks/{task_id}/resume",
    summary="Carry on the stopped pipeline a task belongs to",
    responses=NOT_FOUND,
    dependencies=[SUBMIT],
)
def resume_pipeline(context: ContextDep, task_id: Annotated[TaskRef, Path()]) -> Row:
    """Retries every task of the pipeline that ended without success with nothing after it; 422 when none did."""
    return {"done": [_done(d) for d in actions.resume(context, task_id, by="http")]}
