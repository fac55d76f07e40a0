"""The tasks a chaos phase submits: a mix of every kind over every environment, as plain requests."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.exc import OperationalError

from ops.fleet import SAMPLE_BRANCHES
from switchyard.errors import NotYetSent, ServiceUnavailable
from tasks.context import Context
from tasks.submit import submit

Mix = Literal["mixed", "fallback", "pipeline"]
Request = dict[str, Any]
# kind, weight: reviews of the sample's feature branches are the cheapest; pipelines the most complete
MIXED_WEIGHTS = (("pr_review", 4), ("dev_task", 3), ("pr_impl", 2), ("plan", 1))
# the kinds whose ladder has a next rung (a plan has only Claude, so a Claude storm makes it wait for the breaker)
FALLBACK_WEIGHTS = (("pr_review", 4), ("dev_task", 3), ("pr_impl", 2))


def requests_for(mix: Mix, count: int, environments: Sequence[str], tag: str) -> list[Request]:
    """``count`` requests, round-robin over ``environments``; ``pipeline`` is pr_impl only (they review and
    integrate themselves), ``mixed`` follows :data:`MIXED_WEIGHTS`, ``fallback`` :data:`FALLBACK_WEIGHTS`."""
    weights = {"mixed": MIXED_WEIGHTS, "fallback": FALLBACK_WEIGHTS, "pipeline": (("pr_impl", 1),)}[mix]
    kinds = [kind for kind, weight in weights for _ in range(weight)]
    envs = itertools.cycle(environments)
    return [_request(kind, next(envs), i, tag) for i, kind in zip(range(count), itertools.cycle(kinds), strict=False)]


def _request(kind: str, env: str, i: int, tag: str) -> Request:
    title = f"chaos {tag} {i}"
    if kind == "pr_review":
        branch = f"feature/sample-{i % SAMPLE_BRANCHES + 1}"
        return {"kind": kind, "environment": env, "branch": branch, "title": title}
    if kind == "plan":
        return {"kind": kind, "environment": env, "goal": f"Add a status page ({title})"}
    return {"kind": kind, "environment": env, "title": title, "description": f"A small change for {title}."}


@dataclass
class Submitted:
    """Ids ``submit`` returned (the accepted tasks), and how many submissions the fleet refused."""

    ids: list[str] = field(default_factory=list)
    refused: int = 0


def submit_some(ctx: Context, requests: Sequence[Request], into: Submitted, *, each: Callable[[], None]) -> None:
    """Submit ``requests`` one by one, calling ``each`` after every one (pacing, sampling); a submission the
    fleet refuses (the broker is away) is counted, not raised: it was never accepted."""
    for request in requests:
        try:
            into.ids.append(submit(request, context=ctx))
        except NotYetSent as recorded:  # accepted: the outbox sends it once the broker is back, so it is tracked
            into.ids.append(recorded.task_id)
        except (ServiceUnavailable, OperationalError):  # the broker or the database is away: nothing was written
            into.refused += 1
        each()
