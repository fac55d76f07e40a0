"""Rows for the cost-report tests: tasks, their attempts and the ledger's rows, written as the workers write
them (an attempt's normalized usage and cost; a ledger row per attempt, held then settled or released)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from store.costs import UNKNOWN_COST
from store.models import Attempt, Spend, Task
from switchyard.fleet import Fleet, load_fleet
from switchyard.pricing import cost_micros
from switchyard.usage import Usage

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"claude": "claude-sonnet-5", "codex": "gpt-5.3-codex", "ollama": "qwen2.5-coder:7b"}
PRICE_DAY = date(2026, 11, 15)
_ids = itertools.count(1)


def fleet() -> Fleet:
    return load_fleet(ROOT / "switchyard.toml")


@dataclass(frozen=True)
class Try:
    """One attempt and its ledger row. ``state``: settled, released or held; ``cost`` None = priced from usage."""

    provider: str
    usage: Usage = field(default_factory=Usage)
    at: datetime = datetime(2026, 11, 15, 10, 30, tzinfo=UTC)
    state: str = "settled"
    cost: int | None = None
    unknown: bool = False
    status: str = "succeeded"
    ledgered: bool = True


@dataclass(frozen=True)
class Job:
    kind: str = "pr_review"
    env: str = "dev1"
    stage: str = "dev"
    status: str = "succeeded"
    tries: list[Try] = field(default_factory=list)


def charge(the_fleet: Fleet, attempt: Try) -> int:
    if attempt.state != "settled":
        return 0
    if attempt.cost is not None:
        return attempt.cost
    return cost_micros(attempt.usage, the_fleet.price(attempt.provider, MODELS[attempt.provider], PRICE_DAY)[1])


def write(session: Session, the_fleet: Fleet, jobs: list[Job]) -> list[str]:
    """Insert the jobs; their task ids in order."""
    ids = []
    for job in jobs:
        task_id = f"task-{next(_ids):08d}"
        ids.append(task_id)
        group = the_fleet.group_for_kind(job.kind).name
        last = job.tries[-1].provider if job.tries else None
        session.execute(
            insert(Task).values(
                id=task_id,
                kind=job.kind,
                group=group,
                environment=job.env,
                stage=job.stage,
                status=job.status,
                title=f"{job.kind} in {job.env}",
                payload={},
                provider=last,
                created_at=min((t.at for t in job.tries), default=datetime(2026, 11, 15, tzinfo=UTC)),
            )
        )
        for number, attempt in enumerate(job.tries, start=1):
            _write_try(session, the_fleet, task_id, number=number, attempt=attempt, group=group, job=job)
    session.flush()
    return ids


def _write_try(
    session: Session, the_fleet: Fleet, task_id: str, *, number: int, attempt: Try, group: str, job: Job
) -> None:
    usage, model = attempt.usage, MODELS[attempt.provider]
    charged = charge(the_fleet, attempt)
    version = UNKNOWN_COST if attempt.unknown else f"{attempt.provider}/{model}@x"
    session.execute(
        insert(Attempt).values(
            task_id=task_id,
            attempt=number,
            provider=attempt.provider,
            model=model,
            transport="api",
            status=attempt.status,
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            output_tokens=usage.output_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            compute_seconds=usage.compute_seconds,
            cost_micros=charged,
            started_at=attempt.at,
        )
    )
    if attempt.ledgered:
        session.execute(
            insert(Spend).values(
                task_id=task_id,
                attempt=number,
                provider=attempt.provider,
                model=model,
                group=group,
                environment=job.env,
                stage=job.stage,
                state=attempt.state,
                held_micros=50_000,
                charged_micros=charged,
                price_version=version if attempt.state == "settled" else None,
                created_at=attempt.at,
            )
        )


def clear(session: Session) -> None:
    for table in (Spend, Attempt, Task):
        session.execute(delete(table))
