"""The naive Celery app bench/throughput.py sets against Switchyard: the same SDK call to the same simulator
and one result row, nothing else (no routing, holds, breakers, leases or attempts).

    celery -A bench.bare_app worker -Q bare -P threads -c 3     (bench/throughput.py starts it)

Configured from the environment: ``BENCH_BROKER_URL``, ``BENCH_DATABASE_URL``, ``BENCH_SIMULATOR_URL``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import anthropic
from celery import Celery
from sqlalchemy import Column, DateTime, Engine, Integer, MetaData, String, Table, Text, create_engine, insert

QUEUE = "bare"
metadata = MetaData()
results = Table(
    "bench_bare_results",
    metadata,
    Column("task_id", String(36), primary_key=True),
    Column("answer", Text),
    Column("output_tokens", Integer),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
)

app = Celery("bare", broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
)
_made: dict[str, Any] = {}  # the engine and the SDK client of this process, made on first use


def engine() -> Engine:
    if "engine" not in _made:
        _made["engine"] = create_engine(os.environ["BENCH_DATABASE_URL"], connect_args=_connect_args())
    made: Engine = _made["engine"]
    return made


def _connect_args() -> dict[str, object]:
    url = os.environ["BENCH_DATABASE_URL"]
    return {"timeout": 30, "check_same_thread": False} if url.startswith("sqlite") else {}


def client() -> anthropic.Anthropic:
    if "client" not in _made:  # one client per process, like Switchyard's providers: its connection pool stays warm
        url = os.environ["BENCH_SIMULATOR_URL"]
        _made["client"] = anthropic.Anthropic(api_key="simulated", base_url=url, max_retries=0)
    made: anthropic.Anthropic = _made["client"]
    return made


@app.task(name="bench.bare.review")  # type: ignore[untyped-decorator]
def review(task_id: str, model: str, system: str, prompt: str, max_tokens: int) -> None:
    started = datetime.now(UTC)
    message = client().messages.create(
        model=model, max_tokens=max_tokens, system=system, messages=[{"role": "user", "content": prompt}]
    )
    text = "".join(block.text for block in message.content if block.type == "text")
    with engine().begin() as conn:
        conn.execute(
            insert(results).values(
                task_id=task_id,
                answer=text,
                output_tokens=message.usage.output_tokens,
                started_at=started,
                finished_at=datetime.now(UTC),
            )
        )
