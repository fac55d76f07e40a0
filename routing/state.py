"""Wiring of the shared provider state: the state Redis, the fleet's breakers, transitions into SQL, views.

A worker process makes one :class:`~routing.breaker.Breakers` with :func:`breakers_for` (after fork) and
passes it to the router (its ``snapshot``) and to :func:`routing.guard.guarded_call`. Every transition is
written to the ``breaker_transitions`` table by :func:`record_transition`; `switchyard status --providers`
and ``GET /api/breakers`` read :func:`providers_view`.
"""

from __future__ import annotations

import functools
import logging
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from routing.breaker import Breakers
from routing.permits import OnTransition, Transition
from store import alerts
from store.db import session_scope
from store.models import BreakerTransition
from switchyard.errors import StateUnavailable
from switchyard.fleet_models import Fleet

log = logging.getLogger(__name__)
STATE_TIMEOUT_S = 2.0  # a state Redis slower than this is treated as away (the router fails closed)


def connect_state(url: str, *, timeout: float = STATE_TIMEOUT_S) -> redis.Redis:
    """A client of the state Redis; nothing is sent until it is used.

    One immediate retry, on a dropped connection only (a pooled connection Redis closed): the scripts change
    state, so a timed-out one is not sent again, and a Redis that is away is reported at once (fail closed).
    """
    retry = Retry(NoBackoff(), retries=1, supported_errors=(redis.ConnectionError,))
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=retry)


def breakers_for(state_url: str, fleet: Fleet, *, database_url: str | None = None) -> Breakers:
    """The fleet's breakers over the state Redis; transitions go to SQL when ``database_url`` is given."""
    record: OnTransition | None = None
    if database_url is not None:
        record = functools.partial(record_transition, database_url)
    return Breakers.from_fleet(connect_state(state_url), fleet, on_transition=record)


def record_transition(database_url: str, transition: Transition) -> None:
    """Append ``transition`` to ``breaker_transitions``. A database that is away costs the history, not the call."""
    row = BreakerTransition(
        provider=transition.provider,
        from_state=transition.from_state,
        to_state=transition.to_state,
        cause=transition.cause,
        at=transition.at,
    )
    try:
        with session_scope(database_url) as session:
            session.add(row)
            alert = transition_alert(transition)
            if alert is not None:  # with its transition's row: both or neither
                alerts.record(session, **alert, now=transition.at)
    except SQLAlchemyError as exc:
        # The class only: a driver's message may quote the row or the server's address.
        log.warning("breaker transition of %s not recorded in SQL (%s)", transition.provider, type(exc).__name__)


def transition_alert(t: Transition) -> dict[str, Any] | None:
    """The alert row of a transition (pure), or None: a breaker that opened (from closed: a half-open probe
    that failed is the same outage), one that closed again after it was open, a provider disabled (401/403).
    Each transition is handed to exactly one process by Redis; its time keys the alert, so it is recorded once."""
    at = t.at.isoformat()
    if t.to_state == "disabled":
        return _alert(
            alerts.PROVIDER_DISABLED,
            t,
            f"Provider {t.provider} disabled",
            f"{t.cause}. No call goes to {t.provider} until `switchyard breaker enable {t.provider}`.",
            at,
        )
    if t.to_state == "open" and t.from_state == "closed":
        return _alert(
            alerts.BREAKER_OPENED,
            t,
            f"Breaker of {t.provider} opened",
            f"{t.cause}. Calls go to the next rung of each ladder until a half-open probe succeeds.",
            at,
        )
    if t.to_state == "closed" and t.from_state in {"open", "half_open"}:
        return _alert(alerts.BREAKER_CLOSED, t, f"Breaker of {t.provider} closed again", f"{t.cause}.", at)
    return None


def _alert(cause: str, t: Transition, title: str, body: str, at: str) -> dict[str, Any]:
    payload = {"provider": t.provider, "from": t.from_state, "to": t.to_state, "cause": t.cause, "at": at}
    return {"cause": cause, "key": f"{cause}:{t.provider}:{at}", "title": title, "body": body, "payload": payload}


def transition_history(database_url: str, provider: str | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
    """The recorded transitions, newest first."""
    query = select(BreakerTransition).order_by(BreakerTransition.at.desc(), BreakerTransition.id.desc())
    if provider is not None:
        query = query.where(BreakerTransition.provider == provider)
    with session_scope(database_url) as session:
        rows = session.scalars(query.limit(limit)).all()
        return [
            {"provider": r.provider, "from": r.from_state, "to": r.to_state, "cause": r.cause, "at": r.at} for r in rows
        ]


def providers_view(state_url: str, fleet: Fleet) -> list[dict[str, Any]]:
    """One row per provider of the fleet: breaker state, failures, last transition, in-flight and rate, and the
    models marked unusable (each ``in_force`` under ``fleet``, the fleet file this process read)."""
    client = connect_state(state_url)
    try:
        statuses = Breakers.from_fleet(client, fleet).status(fleet.providers)
    except StateUnavailable as exc:
        raise StateUnavailable(
            f"cannot read provider state from {where(state_url)}: {exc}. Is the fleet up (`switchyard up`)? "
            "Otherwise set SWITCHYARD_STATE_URL to a reachable Redis"
        ) from None
    finally:
        client.close()
    return [status.as_dict(fleet) for status in statuses.values()]


def where(url: str) -> str:
    """``host:port/db`` of a Redis URL: enough to find it, never its password."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"
