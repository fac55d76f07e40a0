"""The payload of a task: one pydantic model for every kind, checked at submission against the fleet.

One model (not one per kind) so fields can be added without breaking callers; :func:`check_against_fleet`
adds what only the fleet knows (environment and stage names, text limits) and what each kind requires.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from switchyard.errors import InputError
from switchyard.fleet import Fleet, Kind

REQUIRED: dict[str, tuple[str, str]] = {
    "pr_review": ("branch", "the branch to review, e.g. --branch feature/login"),
    "pr_integ": ("branch", "the branch to merge, e.g. --branch feature/login"),
    "plan": ("goal", "what to plan, e.g. --goal 'add a health endpoint'"),
    "pr_impl": ("title", "what to implement, e.g. --title 'add a health endpoint'"),
    "dev_task": ("title", "what to do, e.g. --title 'tidy the README'"),
}


class SubmitRequest(BaseModel):
    """What a user asks for. ``branch`` is reviewed (pr_review) or merged (pr_integ); ``goal`` is planned."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    kind: Kind
    environment: str
    stage: str = "dev"
    title: str = Field(default="", max_length=200)
    description: str = ""
    branch: str | None = Field(default=None, max_length=255)
    goal: str | None = None
    parent_id: str | None = Field(default=None, max_length=36)
    depth: int = Field(default=0, ge=0, le=8)
    # routing: providers this task must not use (a review avoids its implementer) and how long it may
    # wait for a provider or budget (deferred with a countdown until then), seconds from submission
    avoid_providers: list[str] = Field(default_factory=list, max_length=8)
    deadline_s: int | None = Field(default=None, ge=0, le=7 * 24 * 3600)
    # the PR pipeline (tasks/pipeline.py): a pr_impl with ``pipeline`` is reviewed, sent back at most
    # [kinds.pr_impl] review_rounds times, then integrated; ``round`` counts implementations on one branch
    pipeline: bool = True
    round: int = Field(default=1, ge=1, le=20)
    feedback: str = ""  # the review comments a re-implementation must address
    review_of: str | None = Field(default=None, max_length=36)  # pr_review: the pr_impl task it reviews
    implementer: str | None = Field(default=None, max_length=32)  # pr_integ: who may resolve a conflict
    # task graphs (plans, --depends-on): run only after these tasks succeeded, on a branch made from theirs
    depends_on: list[str] = Field(default_factory=list, max_length=100)
    base_branches: list[str] = Field(default_factory=list, max_length=100)
    plan_key: str | None = Field(default=None, max_length=32)


def parse_request(data: SubmitRequest | dict[str, Any]) -> SubmitRequest:
    """Validate raw input into a request; every problem is named in one InputError."""
    if isinstance(data, SubmitRequest):
        return data
    try:
        return SubmitRequest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors())
        raise InputError(f"invalid task: {problems}") from None


def _describe(err: Any) -> str:
    field = ".".join(str(p) for p in err["loc"]) or "task"
    if err["type"] == "extra_forbidden":
        return f"{field}: unknown field; allowed: {', '.join(SubmitRequest.model_fields)}"
    if err["type"] == "literal_error":
        return f"{field}: {err['msg']}"
    return f"{field}: {err['msg']}"


def check_against_fleet(request: SubmitRequest, fleet: Fleet) -> None:
    """Refuse a request the fleet cannot run: unknown environment or stage, missing fields, oversized text."""
    envs = fleet.environments
    if request.environment not in envs.names:
        raise InputError(f"unknown environment {request.environment!r}; known: {', '.join(envs.names)}")
    if request.stage not in envs.stages:
        raise InputError(f"unknown stage {request.stage!r}; known: {', '.join(envs.stages)}")
    field, hint = REQUIRED[request.kind]
    if not getattr(request, field):
        raise InputError(f"{request.kind} needs {field}: {hint}")
    if request.kind == "pr_integ" and request.stage != envs.stages[0]:
        raise InputError(
            f"pr_integ merges into the {envs.stages[0]!r} stage; later stages receive changes by promotion"
        )
    check_providers(request, fleet)
    max_depth = fleet.kind("plan").max_depth
    if request.kind == "plan" and request.depth > max_depth:
        raise InputError(
            f"plans may nest {max_depth} levels deep ([kinds.plan] max_depth); this one is {request.depth}"
        )
    limit = fleet.limits.max_text_chars
    for name in ("title", "description", "goal"):
        value = getattr(request, name) or ""
        if len(value) > limit:
            raise InputError(f"{name} is {len(value)} characters; the limit is {limit} (limits.max_text_chars)")


def check_providers(request: SubmitRequest, fleet: Fleet) -> None:
    """A provider to avoid (``--avoid``) or an implementer must be one the fleet file declares."""
    known = ", ".join(fleet.providers)
    avoid = sorted(set(request.avoid_providers) - set(fleet.providers))
    if avoid:
        names = ", ".join(repr(name) for name in avoid)
        noun = "provider" if len(avoid) == 1 else "providers"
        raise InputError(f"cannot avoid {names}: the fleet has no such {noun}; its providers are {known}")
    if request.implementer and request.implementer not in fleet.providers:
        raise InputError(
            f"implementer {request.implementer!r}: the fleet has no such provider; its providers are {known}"
        )
