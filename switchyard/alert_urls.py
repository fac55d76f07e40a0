"""Alert URLs (apprise's notation: ``json://host/path``, ``slack://…``, ``mailto://…``): checked and masked.

An alert URL holds secrets (a webhook's token, a password), so it is shown and logged only through
:func:`mask`: the scheme and the host stay, a password, a path and the query are replaced by ``***`` (for a
service URL, whatever apprise itself hides as private, a token, is ``***`` too). :func:`problem` says why
apprise cannot send to a URL, naming it masked, or None when it can. The URLs come from the fleet file's
``[alerts] urls`` and from ``SWITCHYARD_ALERT_URLS`` (:func:`configured`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import apprise

HIDDEN = "***"
# apprise's generic webhooks: their path and query are the receiver's own, and often hold a token
_GENERIC = frozenset({"json", "jsons", "xml", "xmls", "form", "forms", "http", "https"})
_APPRISE_PRIVATE = re.compile(r"(?<![\w*])\w\.\.\.\w(?![\w*])|\*{2,}")  # apprise's "T...2" and "****"
_SPLIT = re.compile(r"[\s,]+")


@contextmanager
def _quiet() -> Iterator[None]:
    """apprise logs what it cannot parse; its messages can quote the URL, so they are kept out of our logs."""
    logger = logging.getLogger("apprise")
    level, logger.level = logger.level, logging.CRITICAL + 1
    try:
        yield
    finally:
        logger.setLevel(level)


def instantiate(url: str) -> apprise.NotifyBase | None:
    """apprise's notifier for ``url``, or None when apprise cannot parse it."""
    import apprise  # noqa: PLC0415 -- its plugins take a while to load: only a fleet with alert URLs pays for it

    with _quiet():
        try:
            found = apprise.Apprise.instantiate(url)
        except Exception:  # noqa: BLE001 -- a plugin's parser that raises is one more URL it cannot parse
            return None
    return found if isinstance(found, apprise.NotifyBase) else None


def scheme_of(url: str) -> str:
    head = url.split("://", 1)[0] if "://" in url else ""
    return head.lower() if head.isascii() and head.replace("+", "").isalnum() else ""


def mask(url: str) -> str:
    """``url`` safe to show: ``json://user:***@host:8080/***``; ``slack://***/***/***``; ``foo://***``."""
    scheme = scheme_of(url)
    notifier = instantiate(url)
    if notifier is None:
        return f"{scheme or 'unparseable'}://{HIDDEN}"
    if scheme in _GENERIC:
        return _mask_generic(url, scheme)
    private = str(cast(Any, notifier).url(privacy=True)).split("?", 1)[0]
    return re.sub(r"/+$", "/", _APPRISE_PRIVATE.sub(HIDDEN, private))


def _mask_generic(url: str, scheme: str) -> str:
    parts = urlsplit(url)
    user = ""
    if parts.username:
        user = f"{parts.username}:{HIDDEN}@" if parts.password else f"{HIDDEN}@"
    port = f":{parts.port}" if parts.port else ""
    path = f"/{HIDDEN}" if parts.path.strip("/") or parts.query else "/"
    return f"{scheme}://{user}{parts.hostname or ''}{port}{path}"


def problem(url: str) -> str | None:
    """Why apprise cannot send to ``url`` (the URL masked), or None when it can."""
    if not url.strip():
        return "an alert URL is empty; remove it or write one such as json://host:port/path"
    if instantiate(url) is None:
        return (
            f"{mask(url)} is not an alert URL apprise can send to (unknown scheme, or a part missing); "
            "see https://github.com/caronc/apprise/wiki for the services and their URLs, e.g. json://host:port/path"
        )
    return None


def split(value: str) -> list[str]:
    """``SWITCHYARD_ALERT_URLS``: URLs separated by spaces or commas."""
    return [part for part in _SPLIT.split(value) if part]


def configured(fleet_urls: Iterable[str], env_urls: str | None) -> list[str]:
    """The URLs alerts go to: the fleet file's, then ``SWITCHYARD_ALERT_URLS``'s, each once."""
    urls = [*fleet_urls, *split(env_urls or "")]
    return list(dict.fromkeys(urls))


def scrub(text: str, urls: Iterable[str]) -> str:
    """``text`` (an error message) with every secret part of ``urls`` replaced by ``***``."""
    for url in urls:
        parts = urlsplit(url)
        secrets = [url, parts.password or "", parts.path.strip("/"), parts.query]
        secrets += [p for p in parts.path.split("/") if len(p) >= 6]
        if scheme_of(url) not in _GENERIC:
            secrets += [parts.netloc, *(p for p in parts.netloc.split(":") if len(p) >= 4)]
        for secret in sorted((s for s in secrets if s), key=len, reverse=True):
            text = text.replace(secret, HIDDEN)
    return text
