"""What each stage of each environment holds: the commit its branch was last moved to, when, how, by which task.

A stage's branch moves in two ways, both recorded in SQL: an integration merges a task's branch into it (the
``merges`` table, ``merged``), or ``env promote`` fast-forwards it to the stage before it (the ``promotions``
table, ``promoted``). The latest of the two is what the stage holds. A promotion names the commit it carried;
the task behind that commit is the integration that merged it (its ``merge_sha``), when one did.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import Merge, Promotion, Task

Row = dict[str, Any]
MERGED = ("merged",)
NEVER = datetime.min.replace(tzinfo=UTC)


def _utc(moment: datetime | None) -> datetime:
    if moment is None:
        return NEVER
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def stage_holdings(session: Session) -> dict[tuple[str, str], Row]:
    """Per (environment, stage) that any merge or promotion moved: what it holds now (see the module)."""
    merges = list(session.scalars(select(Merge).where(Merge.status.in_(MERGED), Merge.merge_sha.is_not(None))))
    promotions = list(session.scalars(select(Promotion).where(Promotion.status == "promoted")))
    by_sha = {m.merge_sha: m for m in sorted(merges, key=lambda m: _utc(m.updated_at))}
    titles = _titles(session, {m.task_id for m in merges})
    held: dict[tuple[str, str], tuple[datetime, Row]] = {}
    for merge in merges:
        when = _utc(merge.updated_at)
        row = {
            "commit": merge.merge_sha,
            "at": when.isoformat(),
            "how": "merge",
            "from": merge.branch,
            "task_id": merge.task_id,
            "task_title": titles.get(merge.task_id, ""),
        }
        _keep(held, (merge.environment, merge.stage), when, row)
    for promotion in promotions:
        when = _utc(promotion.created_at)
        source = by_sha.get(promotion.source_sha)
        row = {
            "commit": promotion.target_after,
            "at": when.isoformat(),
            "how": "promotion",
            "from": promotion.from_stage,
            "task_id": source.task_id if source else None,
            "task_title": titles.get(source.task_id, "") if source else "",
        }
        _keep(held, (promotion.environment, promotion.to_stage), when, row)
    return {key: row for key, (_, row) in held.items()}


def _keep(held: dict[tuple[str, str], tuple[datetime, Row]], key: tuple[str, str], when: datetime, row: Row) -> None:
    if key not in held or held[key][0] <= when:
        held[key] = (when, row)


def _titles(session: Session, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    return {i: title for i, title in session.execute(select(Task.id, Task.title).where(Task.id.in_(ids)))}
