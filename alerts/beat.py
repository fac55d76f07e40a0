"""The Celery task celery beat sends every ``[alerts] every_s``: record yesterday's spend report when it is
due, then deliver the pending alerts (:func:`alerts.sender.run_once`). The Celery app lists this module in its
``include`` (by name: the app sits a layer below), so every worker can run it; beat sends it to the default
queue with an expiry of one interval, so rounds never pile up while no worker runs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from alerts.daily import record_yesterday
from alerts.deliver import alert_urls, sender
from alerts.sender import run_once
from celeryconfig import SEND_ALERTS_TASK
from tasks.app import app
from tasks.context import get_context

log = logging.getLogger(__name__)


@app.task(name=SEND_ALERTS_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def send_alerts() -> dict[str, int]:
    """Deliver what is due; the counts of what this round did."""
    ctx = get_context()
    policy = ctx.fleet.alerts
    if policy.daily_report:
        record_yesterday(ctx.database_url, today=datetime.now(UTC).date())
    done = run_once(ctx.database_url, alert_urls(ctx.settings, ctx.fleet), policy, sender(policy.timeout_s))
    if done.delivered or done.failed:
        log.info("alerts: %d delivered, %d to retry, %d given up, %d unsent", *vars(done).values())
    return dict(vars(done))
