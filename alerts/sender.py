"""The alert sender: deliver the pending alerts to every alert URL, retrying with backoff.

Run by celery beat every ``[alerts] every_s`` (:mod:`alerts.beat`), never by the task that caused an alert, so
a slow or failing receiver costs the sender's time, not a task's. Each run takes the due alerts (each for a
lease long enough to try every URL: a sender that dies meanwhile leaves them due again) and sends each to the
URLs that have not taken it yet. All took it: ``delivered``. Some did not: tried again after
:func:`backoff`, up to ``max_attempts``, then ``failed`` with the last (masked) error. No URL configured:
``unsent`` (``switchyard alerts list`` still shows it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from alerts.deliver import Send, fingerprint
from store import alerts
from store.db import session_scope
from switchyard.fleet_models import AlertsPolicy

log = logging.getLogger(__name__)
LEASE_MARGIN_S = 30.0


def backoff(attempts: int, *, initial_s: float, max_s: float) -> float:
    """Seconds before try ``attempts + 1`` after ``attempts`` failed ones: doubling from ``initial_s``."""
    return float(min(initial_s * 2.0 ** max(attempts - 1, 0), max_s))


@dataclass(frozen=True)
class SenderRun:
    """What one run did with the alerts it took."""

    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    unsent: int = 0


def run_once(
    database_url: str, urls: list[str], policy: AlertsPolicy, send: Send, *, now: datetime | None = None
) -> SenderRun:
    now = now or datetime.now(UTC)
    lease = policy.timeout_s * 2 * max(len(urls), 1) + LEASE_MARGIN_S
    with session_scope(database_url) as session:
        due = alerts.claim_due(session, now=now, lease_s=lease)
    counts = {"delivered": 0, "retrying": 0, "failed": 0, "unsent": 0}
    for alert in due:
        counts[_deliver(database_url, urls, policy, send, alert)] += 1
    return SenderRun(**counts)


def _deliver(database_url: str, urls: list[str], policy: AlertsPolicy, send: Send, alert: alerts.Due) -> str:
    done = list(alert.delivered_to)
    errors = []
    for url in urls:
        if fingerprint(url) in done:
            continue
        why = send(url, alert.title, alert.body, alert.cause)
        if why is None:
            done.append(fingerprint(url))
        else:
            errors.append(why)
    state, retry_at = _outcome(urls, errors, alert.attempts + 1, policy)
    error = "; ".join(errors) or (None if urls else "no alert URL configured ([alerts] urls, SWITCHYARD_ALERT_URLS)")
    now = datetime.now(UTC)
    with session_scope(database_url) as session:
        alerts.finish(
            session,
            alert_id=alert.id,
            state=state,
            delivered_to=tuple(done),
            error=error,
            next_try_at=retry_at,
            now=now,
        )
    if errors:
        log.warning(
            "alert %s (%s) not delivered (attempt %d, %s): %s",
            alert.id,
            alert.cause,
            alert.attempts + 1,
            state,
            "; ".join(errors),
        )
    return "retrying" if state == "pending" else state


def _outcome(urls: list[str], errors: list[str], attempts: int, policy: AlertsPolicy) -> tuple[str, datetime | None]:
    if not urls:
        return "unsent", None
    if not errors:
        return "delivered", None
    if attempts >= policy.max_attempts:
        return "failed", None
    wait = backoff(attempts, initial_s=policy.retry_initial_s, max_s=policy.retry_max_s)
    return "pending", datetime.now(UTC) + timedelta(seconds=wait)
