"""Admin routes (scope ``admin``): what ``switchyard breaker reset``, ``budget set|remove`` and ``simulator
fault|heal|show`` do, over HTTP, through the same functions, and the audit they write to.

Each change is written to the audit table with the token's name as the actor (``anonymous`` with auth off)
after it succeeded; a refused change (422, 404, 503) changes nothing and is not recorded.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from providers import simulator_control
from routing.ledger import Ledger
from routing.state import breakers_for, providers_view
from store import audit
from store.budgets import delete_override
from store.db import session_scope
from switchyard.errors import NotFound
from tasks.context import Context
from web.auth import ActorAdmin
from web.deps import NOT_FOUND, ContextDep, SessionDep

router = APIRouter(prefix="/api/admin", tags=["admin"])
audit_router = APIRouter(prefix="/api", tags=["admin"])
Row = dict[str, Any]
Name = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


def _record(context: Context, actor: str, action: str, arguments: Row) -> None:
    with session_scope(context.database_url) as session:
        audit.record(session, actor=actor, action=action, arguments=arguments)


@router.post(
    "/breakers/{provider}/reset", summary="Close a provider's breaker and forget its failures", responses=NOT_FOUND
)
def reset_breaker(context: ContextDep, actor: ActorAdmin, provider: Name) -> Row:
    """The same as ``switchyard breaker reset PROVIDER``; 503 when the state Redis is away."""
    if provider not in context.fleet.providers:
        raise NotFound(f"unknown provider {provider!r}; the fleet has: {', '.join(context.fleet.providers)}")
    state_url = context.settings.effective_state_url
    breakers_for(state_url, context.fleet, database_url=context.database_url).reset(provider)
    _record(context, actor.name, "breaker.reset", {"provider": provider})
    return {"providers": [row for row in providers_view(state_url, context.fleet) if row["provider"] == provider]}


class BudgetSet(BaseModel):
    """The body of ``PUT /api/admin/budgets``: the options of ``switchyard budget set``."""

    model_config = ConfigDict(extra="forbid")

    scope: str = Field(max_length=32)
    window: str = Field(max_length=16)
    cap_usd: float = Field(ge=0, le=1e9)
    target: str = Field(default="*", max_length=64)
    alert_usd: float | None = Field(default=None, ge=0, le=1e9)
    action: str | None = Field(default=None, max_length=16)


class BudgetKey(BaseModel):
    """The query of ``DELETE /api/admin/budgets``: which override to remove."""

    model_config = ConfigDict(extra="forbid")

    scope: str = Field(max_length=32)
    window: str = Field(max_length=16)
    target: str = Field(default="*", max_length=64)


@router.put("/budgets", summary="Add or replace a budget; in force from the next hold")
def set_budget(context: ContextDep, actor: ActorAdmin, body: Annotated[BudgetSet, Body()]) -> Row:
    """The same as ``switchyard budget set``; 422 names a bad scope, window, target, cap or action."""
    budget = Ledger(context.database_url, context.fleet).set_budget(**body.model_dump())
    done = {
        "scope": budget.scope,
        "target": budget.target,
        "window": budget.window,
        "cap_usd": budget.cap_micros / 1e6,
        "alert_usd": None if budget.alert_micros is None else budget.alert_micros / 1e6,
        "action": budget.action,
    }
    _record(context, actor.name, "budget.set", done)
    return {"set": done}


@router.delete("/budgets", summary="Remove a budget set by an operator", responses=NOT_FOUND)
def remove_budget(context: ContextDep, actor: ActorAdmin, key: Annotated[BudgetKey, Query()]) -> Row:
    """The same as ``switchyard budget remove``; 404 when no such override was set."""
    with session_scope(context.database_url) as session:
        delete_override(session.connection(), **key.model_dump())
    _record(context, actor.name, "budget.remove", key.model_dump())
    return {"removed": key.model_dump()}


class Fault(BaseModel):
    """The body of ``POST /api/admin/simulator/{provider}/fault``: the options of ``switchyard simulator fault``."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float | None = Field(default=None, ge=0, le=1)
    status: int | Literal["timeout"] | None = None
    latency_ms: int | None = Field(default=None, ge=0, le=600_000)
    retry_after: float | None = Field(default=None, ge=0, le=86_400)
    fail_next: int | None = Field(default=None, ge=0, le=1_000_000)


@router.get("/simulator", summary="The simulator's faults, latency and call counters per provider")
def simulator_state(context: ContextDep, _actor: ActorAdmin) -> Row:
    return simulator_control.state(context.settings.effective_simulator_url)


@router.post("/simulator/{provider}/fault", summary="Make a simulated provider fail or slow down", responses=NOT_FOUND)
def simulator_fault(
    context: ContextDep, actor: ActorAdmin, provider: Name, body: Annotated[Fault | None, Body()] = None
) -> Row:
    """The same as ``switchyard simulator fault``; 503 when the simulator does not answer."""
    asked = (body or Fault()).model_dump()
    status = asked.pop("status")
    change = simulator_control.fault_change(**asked, status=None if status is None else str(status))
    view = simulator_control.fault(context.settings.effective_simulator_url, provider, change)
    _record(context, actor.name, "simulator.fault", {"provider": provider, **change})
    return {"provider": provider, **view}


@router.post("/simulator/{provider}/heal", summary="No more faults for a simulated provider", responses=NOT_FOUND)
def simulator_heal(context: ContextDep, actor: ActorAdmin, provider: Name) -> Row:
    view = simulator_control.heal(context.settings.effective_simulator_url, provider)
    _record(context, actor.name, "simulator.heal", {"provider": provider})
    return {"provider": provider, **view}


@audit_router.get("/audit", summary="The admin actions recorded, newest first")
def audit_list(session: SessionDep, _actor: ActorAdmin, limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> Row:
    """The same rows as ``switchyard audit --json``."""
    return {"audit": audit.listing(session, limit=limit)}
