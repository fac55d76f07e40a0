"""What happens between tasks: follow-ups after a task reaches its terminal status.

:func:`after_terminal` is called by the attempt loop once a task has its terminal status (committed), for
every kind and every status.
"""

from __future__ import annotations

from tasks.context import Context
from tasks.kinds.base import Outcome, TaskInfo


def after_terminal(ctx: Context, task: TaskInfo, status: str, outcome: Outcome | None) -> None:
    """Enqueue what follows ``task`` (reviews, re-implementations, dependents) and update its parent."""
    return None
