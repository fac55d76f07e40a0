"""How a task shows in Flower: the labels its message carries, and the exception its end raises.

A task's message carries only its id (and a lease token), which is all a worker needs; Flower would show just
that uuid. So every message Switchyard sends is labelled with Celery's ``argsrepr``/``kwargsrepr`` (what Flower
and ``celery inspect`` show instead of the real arguments) naming the task's kind, environment, stage and title,
and carries the task's parent (a plan, or the task whose outcome caused a follow-up) as Celery's ``parent_id``,
so Flower lists a plan's sub-tasks and a pipeline's follow-ups as its children.

A task that Switchyard ends in any status but ``succeeded`` ends its Celery task by raising :class:`EndedWithout`
once the status is stored: Flower shows it as FAILURE with the status and reason as its exception. The task
declares it in ``throws`` (logged without a traceback), and nothing retries it (no ``autoretry_for``; the message
is acknowledged, ``task_acks_on_failure_or_timeout``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from store import repo

TITLE_CHARS = 80


class EndedWithout(Exception):
    """A task ended without success; Flower shows its status and reason as the exception."""

    def __init__(self, status: str, reason: str | None) -> None:
        super().__init__(f"{status}: {reason or 'no reason recorded'}")
        self.status = status
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its two arguments
        return (type(self), (self.status, self.reason))


@dataclass(frozen=True)
class Labels:
    """What a task's message shows in Flower, and the Celery parent it hangs under."""

    argsrepr: str
    kwargsrepr: str
    parent_id: str | None

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``send_task``/``apply_async``."""
        shown: dict[str, Any] = {"argsrepr": self.argsrepr, "kwargsrepr": self.kwargsrepr}
        if self.parent_id:
            shown["parent_id"] = self.parent_id
        return shown


def labels(*, task_id: str, kind: str, environment: str, stage: str, title: str, parent_id: str | None) -> Labels:
    """Pure: the labels of one task's message."""
    short = title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"
    shown = {"kind": kind, "environment": environment, "stage": stage, "title": short}
    return Labels(argsrepr=repr((task_id,)), kwargsrepr=repr(shown), parent_id=parent_id)


def labels_of(session: Session, task_id: str) -> Labels | None:
    """The labels of a stored task; None when there is no such task."""
    row = repo.get_task(session, task_id)
    if row is None:
        return None
    return labels(
        task_id=row.id,
        kind=row.kind,
        environment=row.environment,
        stage=row.stage,
        title=row.title or "",
        parent_id=row.parent_id,
    )
