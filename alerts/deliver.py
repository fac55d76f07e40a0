"""One alert to one URL, through apprise; the URLs alerts go to; their fingerprints.

Nothing here writes a URL anywhere: a delivery's error is scrubbed of the URL's secrets
(:func:`switchyard.alert_urls.scrub`), and a URL is remembered in a row only as its fingerprint.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any, cast

from switchyard.alert_urls import configured, instantiate, mask, scrub
from switchyard.fleet_models import Fleet
from switchyard.settings import Settings

Send = Callable[[str, str, str, str], str | None]  # (url, title, body, cause) -> None when delivered, else why
# apprise's notification type per cause (how Slack, Discord or Teams colour it), by the type's name: apprise
# itself is loaded by the first send, not by every worker at start (like switchyard.alert_urls.instantiate)
KINDS = {
    "breaker_closed": "SUCCESS",
    "daily_report": "INFO",
    "test": "INFO",
    "task_failed": "FAILURE",
    "provider_disabled": "FAILURE",
}


def alert_urls(settings: Settings, fleet: Fleet) -> list[str]:
    """The fleet file's ``[alerts] urls``, then ``SWITCHYARD_ALERT_URLS``'s, each once."""
    env = settings.alert_urls.get_secret_value() if settings.alert_urls is not None else None
    return configured(fleet.alerts.urls, env)


def fingerprint(url: str) -> str:
    """A short digest that tells one URL from another in a row, without the URL."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def sender(timeout_s: float) -> Send:
    """A :data:`Send` through apprise, each receiver given ``timeout_s`` to connect and to answer. apprise's own
    log lines can quote a receiver's address or channel, so they stay out of the process's logs: each send
    captures them, and the sender logs the outcome masked."""
    logging.getLogger("apprise").propagate = False

    def send(url: str, title: str, body: str, cause: str) -> str | None:
        return send_one(url, title, body, cause, timeout_s=timeout_s)

    return send


def send_one(url: str, title: str, body: str, cause: str, *, timeout_s: float) -> str | None:
    """Deliver one alert to ``url``; None when the receiver took it, else why not (masked)."""
    import apprise  # noqa: PLC0415 -- see KINDS

    notifier = instantiate(url)
    if notifier is None:
        return f"{mask(url)}: apprise cannot parse this URL"
    target = cast(Any, notifier)
    target.socket_connect_timeout = target.socket_read_timeout = timeout_s
    kind = apprise.NotifyType[KINDS.get(cause, "WARNING")]
    with cast(Any, apprise.LogCapture)(level=logging.WARNING) as captured:
        try:
            ok = bool(target.notify(body=body, title=title, notify_type=kind))
        except Exception as exc:  # noqa: BLE001 -- a plugin that raises is one more receiver that did not take it
            return f"{mask(url)}: {scrub(f'{type(exc).__name__}: {exc}', [url])}"
        said = captured.getvalue().strip().splitlines()
    if ok:
        return None
    why = said[-1].split(" - ", 2)[-1] if said else "the receiver did not take it"
    return f"{mask(url)}: {scrub(why, [url])}"
