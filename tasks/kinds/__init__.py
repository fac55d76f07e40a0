"""One module per task kind; :data:`HANDLERS` maps each kind to its handler."""

from __future__ import annotations

from tasks.kinds.base import KindHandler
from tasks.kinds.implement import ImplementHandler
from tasks.kinds.integrate import IntegrateHandler
from tasks.kinds.plan import PlanHandler
from tasks.kinds.review import ReviewHandler

HANDLERS: dict[str, KindHandler] = {
    "plan": PlanHandler(),
    "dev_task": ImplementHandler("dev_task"),
    "pr_impl": ImplementHandler("pr_impl"),
    "pr_review": ReviewHandler(),
    "pr_integ": IntegrateHandler(),
}
