"""Storing what a provider call cost, whatever the database is doing at that moment.

An answer is paid for when it arrives. :meth:`Keeper.store_answer` writes it (the attempt ``answered`` with
its answer, usage and cost), then settles the hold; while the database is away both are tried again
(:func:`routing.parked.until_stored`: backoff from the fleet file's ``limits.store_retry_initial_s`` to
``store_retry_max_s``) until a tenth of the task's time limit (``limits.task_time_limit_s``) is left, and the
answer is parked in the state Redis meanwhile, so that a redelivery can store it at its real cost if this
worker dies too (:func:`tasks.claim.recover`). The closing of a failed call (its hold released, its attempt
closed) is kept the same way (:meth:`Keeper.keep`): a redelivery must not find it open and charge it as of
unknown cost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol, TypeVar

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from providers.base import ProviderResponse
from routing.ledger import Ledger
from routing.parked import ParkedAnswer, ParkedAnswers, until_stored
from routing.route import Route
from store import repo
from store.db import session_on, session_scope
from switchyard.fleet_models import Fleet, LimitsConfig
from switchyard.pricing import cost_micros

log = logging.getLogger(__name__)
T = TypeVar("T")
LEFT_FOR_THE_REST = 0.1  # the share of the task's time limit kept for what follows the store (act, status)


class Settles(Protocol):
    def settle(self, *, task_id: str, attempt: int, charged_micros: int, price_version: str | None) -> None: ...


def priced(fleet: Fleet, route: Route, response: ProviderResponse, today: date) -> ParkedAnswer:
    """The answer with its cost at the price in force (or the agent CLI's own figure, when it gave one)."""
    version, price = fleet.price(route.provider, route.model, today)
    cost = cost_micros(response.usage, price)
    if response.reported_cost_usd is not None:  # the agent CLI priced its own session: trust its figure
        cost = round(response.reported_cost_usd * 1_000_000)
        version = f"{version} (reported by the {route.transport} transport)"
    text, usage, latency = response.text, response.usage, response.latency_ms
    return ParkedAnswer(route.provider, route.model, route.transport, text, usage, cost, version, latency)


def store_answered(
    database_url: str, task_id: str, number: int, answer: ParkedAnswer, also: Callable[[Session], None] | None = None
) -> None:
    """The attempt ``answered``, with its answer, usage and cost (a second store changes nothing), and ``also``
    (the try that got the answer, :mod:`tasks.tries`) in the same transaction."""
    with session_scope(database_url) as session:
        write_answered(session, task_id, number, answer, also)


def write_answered(
    session: Session, task_id: str, number: int, answer: ParkedAnswer, also: Callable[[Session], None] | None = None
) -> None:
    """:func:`store_answered` in ``session``'s transaction."""
    repo.finish_attempt(
        session,
        task_id=task_id,
        attempt=number,
        status="answered",
        usage=answer.usage,
        cost_micros=answer.cost_micros,
        price_version=answer.price_version,
        answer=answer.text,
        latency_ms=answer.latency_ms,
    )
    if also is not None:
        also(session)


def park_ttl_s(limits: LimitsConfig) -> float:
    """How long a parked answer waits for a redelivery: as long as the broker may take to redeliver."""
    return limits.visibility_timeout_s + limits.task_time_limit_s + limits.task_deadline_s


@dataclass
class Keeper:
    """Stores for one run of a task that began at ``began`` (side effects passed in, like the Runner's)."""

    database_url: str
    limits: LimitsConfig
    parked: ParkedAnswers
    began: datetime
    now: Callable[[], datetime]
    sleep: Callable[[float], None] = time.sleep

    def keep(self, store: Callable[[], T], on_outage: Callable[[BaseException], None] = lambda _: None) -> T:
        """``store()``, tried again while the database is away, within the task's time limit."""
        elapsed = (self.now() - self.began).total_seconds()
        return until_stored(
            store,
            initial_s=self.limits.store_retry_initial_s,
            max_s=self.limits.store_retry_max_s,
            within_s=self.limits.task_time_limit_s * (1 - LEFT_FOR_THE_REST) - elapsed,
            sleep=self.sleep,
            on_outage=on_outage,
        )

    def store_answer(
        self,
        task_id: str,
        number: int,
        answer: ParkedAnswer,
        ledger: Settles,
        *,
        also: Callable[[Session], None] | None = None,
    ) -> None:
        """The answer stored, then its hold settled at its cost; parked in Redis while the database is away."""
        parked: list[bool] = []

        def park(exc: BaseException) -> None:
            if not parked:
                log.warning(
                    "task %s attempt %s: answer waits for the database (%s)", task_id, number, type(exc).__name__
                )
                parked.append(self.parked.park(task_id, number, answer, ttl_s=park_ttl_s(self.limits)))

        cost, version = answer.cost_micros, answer.price_version
        if isinstance(ledger, Ledger):  # one transaction: the answer and its settle, both or neither

            def answered(conn: Connection) -> None:
                with session_on(conn) as session:
                    write_answered(session, task_id, number, answer, also)

            self.keep(
                lambda: ledger.settle(
                    task_id=task_id, attempt=number, charged_micros=cost, price_version=version, also=answered
                ),
                park,
            )
        else:
            self.keep(lambda: store_answered(self.database_url, task_id, number, answer, also), park)
            self.keep(
                lambda: ledger.settle(task_id=task_id, attempt=number, charged_micros=cost, price_version=version),
                park,
            )
        if any(parked):
            self.parked.drop(task_id, number)
