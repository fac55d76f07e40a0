"""HTTP answers and transport failures of a provider, as :mod:`switchyard.errors` classes.

    429                      → RateLimited (``retry_after`` from the ``retry-after`` header, seconds)
    529 / overloaded_error   → Overloaded
    5xx, 408, 409, timeouts,
    dropped connections      → TransientError
    401, 402, 403            → ProviderDown
    404                      → ModelNotFound (the model is marked unusable; the attempt falls back)
    400, 413, 422, ...       → RequestRejected (the attempt falls back to the next rung)

Every message goes through :func:`scrub`, so an API key a provider echoes back never reaches a log or a row.
"""

from __future__ import annotations

import math

from switchyard.errors import (
    ModelNotFound,
    Overloaded,
    ProviderDown,
    ProviderError,
    RateLimited,
    RequestRejected,
    TransientError,
)

REDACTED = "[redacted]"
NOT_FOUND = 404  # the model named does not exist for this provider (or this key)
MIN_SECRET_CHARS = 4  # shorter "keys" (tests, dummies) would redact ordinary words
DOWN_STATUSES = frozenset({401, 402, 403})
TRANSIENT_4XX = frozenset({408, 409})  # request timeout, lock conflict: trying again can work
ANTHROPIC_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` with every given secret replaced by ``[redacted]``."""
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_CHARS:
            text = text.replace(secret, REDACTED)
    return text


def parse_retry_after(value: str | None, value_ms: str | None = None) -> float | None:
    """Seconds from a ``retry-after`` (or ``retry-after-ms``) header; None when absent or not a number."""
    for raw, scale in ((value_ms, 1000.0), (value, 1.0)):
        try:
            seconds = float(raw) / scale if raw is not None else None
        except ValueError:
            continue  # an HTTP date: the caller's own backoff applies
        if seconds is not None and math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def error_for_status(
    status: int,
    message: str,
    *,
    provider: str,
    retry_after: float | None = None,
    overloaded: bool = False,
) -> ProviderError:
    """The error class for an HTTP error answer (the message must already be scrubbed)."""
    text = f"{provider}: HTTP {status}: {message}"
    if status == 429:
        return RateLimited(text, provider=provider, status=status, retry_after=retry_after)
    if status == 529 or overloaded:
        return Overloaded(text, provider=provider, status=status)
    if status >= 500 or status in TRANSIENT_4XX:
        return TransientError(text, provider=provider, status=status)
    if status in DOWN_STATUSES:
        return ProviderDown(text, provider=provider, status=status)
    if status == NOT_FOUND:
        return ModelNotFound(text, provider=provider, status=status)
    return RequestRejected(text, provider=provider, status=status)


def transport_error(provider: str, what: str, timeout_s: float | None = None) -> TransientError:
    """A timeout or a dropped/refused connection: no HTTP status."""
    after = f" after {timeout_s:g}s" if timeout_s is not None else ""
    return TransientError(f"{provider}: {what}{after}", provider=provider, status=None)
