"""``GET /metrics``: Prometheus text built from SQL on each scrape, in a private registry.

The numbers live in the database (every worker process writes there), so a scrape reads them instead of each
process keeping its own counters; a registry per request keeps the default global one out of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from store import costs, queries
from web.deps import SessionDep

router = APIRouter(tags=["metrics"])
TOKEN_CLASSES = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",  # 5-minute cache writes
    "cache_write_1h_tokens",  # 1-hour cache writes (priced apart)
    "output_tokens",
    "reasoning_tokens",
)


class SnapshotCollector(Collector):
    """Yields metric families from one snapshot of the store, taken before the registry renders."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        yield self._tasks()
        yield from self._providers()
        yield self._attempts()

    def _tasks(self) -> Metric:
        family = GaugeMetricFamily("switchyard_tasks", "Tasks by session group and status", labels=["group", "status"])
        for group, statuses in sorted(self.snapshot["groups"].items()):
            for status, count in sorted(statuses.items()):
                family.add_metric([group, status], count)
        return family

    def _providers(self) -> Iterable[Metric]:
        cost = CounterMetricFamily("switchyard_cost_usd", "Dollars charged by provider", labels=["provider"])
        tokens = CounterMetricFamily("switchyard_tokens", "Tokens by provider and class", labels=["provider", "class"])
        for row in self.snapshot["costs"]["providers"]:
            cost.add_metric([row["provider"]], row["cost_usd"])
            for token_class in TOKEN_CLASSES:
                tokens.add_metric([row["provider"], token_class.removesuffix("_tokens")], row[token_class])
        return (cost, tokens)

    def _attempts(self) -> Metric:
        family = CounterMetricFamily(
            "switchyard_attempts",
            "Attempts by provider, status and error class",
            labels=["provider", "status", "error_class"],
        )
        for row in self.snapshot["attempts"]:
            family.add_metric([row["provider"], row["status"], row["error_class"] or "none"], row["count"])
        return family


def render(session: Session) -> bytes:
    """The Prometheus exposition text for the store behind ``session``."""
    snapshot = {
        "groups": queries.group_counts(session),
        "costs": costs.costs(session),
        "attempts": queries.attempt_counts(session),
    }
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)


@router.get("/metrics", summary="Prometheus metrics: tasks, cost, tokens and attempts", response_class=Response)
def metrics(session: SessionDep) -> Response:
    return Response(render(session), media_type=CONTENT_TYPE_LATEST)
