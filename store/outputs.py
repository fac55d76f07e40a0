"""The output tokens of recent answers, by task kind, provider and model: what a hold's output is sized from
(:mod:`routing.sizing`).

Same rules as :mod:`store.repo`: a session passed in, keyword-only arguments, never a commit.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.costs import UNKNOWN_COST
from store.models import Attempt, Task


def last_attempt(session: Session, *, task_id: str) -> tuple[int, str | None]:
    """The task's highest attempt number (0 before its first attempt) and that attempt's error class."""
    query = select(Attempt.attempt, Attempt.error_class).where(Attempt.task_id == task_id)
    found = session.execute(query.order_by(Attempt.attempt.desc()).limit(1)).first()
    return (0, None) if found is None else (int(found[0]), found[1])


def recent_outputs(session: Session, *, kind: str, provider: str, model: str, limit: int) -> list[int]:
    """The output tokens of the last ``limit`` answered attempts of ``kind`` on ``provider``'s ``model`` over its
    api transport, newest first. Answered: the call returned an answer and was priced (a call left open, charged
    as of unknown cost, has no usage; a failed call none either). Reasoning tokens are inside the output tokens,
    as the output limit counts them."""
    if limit <= 0:
        return []
    query = (
        select(Attempt.output_tokens)
        .join(Task, Task.id == Attempt.task_id)
        .where(
            Task.kind == kind,
            Attempt.provider == provider,
            Attempt.model == model,
            Attempt.transport == "api",
            Attempt.answer.is_not(None),
            Attempt.price_version.is_not(None),
            Attempt.price_version != UNKNOWN_COST,
        )
        .order_by(Attempt.id.desc())
        .limit(limit)
    )
    return [int(tokens) for tokens in session.scalars(query)]
