"""A client of the provider simulator's control API (``/_sim/*``, served by :mod:`simulator.control`).

``switchyard simulator fault|heal|show`` and the status API's admin routes both call these functions, so a
fault set from the dashboard is the same change as one set from the CLI.
"""

from __future__ import annotations

from typing import Any

import httpx

from switchyard.errors import InputError, NotFound, ServiceUnavailable

Json = dict[str, Any]


def parse_status(text: str) -> int | str:
    if text == "timeout":
        return text
    if text.isdigit() and 400 <= int(text) <= 599:
        return int(text)
    raise InputError(f"--status must be an HTTP error status 400-599 or 'timeout', got {text!r}")


def fault_change(
    *,
    error_rate: float | None = None,
    status: str | None = None,
    latency_ms: int | None = None,
    retry_after: float | None = None,
    fail_next: int | None = None,
) -> Json:
    """Pure: the body of a fault. With nothing asked, or only a status, every call fails (error rate 1)."""
    change: Json = {"latency_ms": latency_ms, "retry_after_s": retry_after, "fail_next": fail_next}
    if status is not None:
        change["error_status"] = parse_status(status)
    nothing_else = latency_ms is None and retry_after is None and fail_next is None
    if error_rate is None and (status is not None or nothing_else):
        error_rate = 1.0
    change["error_rate"] = error_rate
    return {k: v for k, v in change.items() if v is not None}


def fault(url: str, provider: str, change: Json) -> Json:
    """Set ``change`` (see :func:`fault_change`) on ``provider``; its state after."""
    return control(url, "post", f"/_sim/providers/{provider}", change)


def heal(url: str, provider: str) -> Json:
    return control(url, "post", f"/_sim/providers/{provider}/heal")


def state(url: str) -> Json:
    return control(url, "get", "/_sim/state")


def control(url: str, method: str, path: str, body: Json | None = None) -> Json:
    """One call of the simulator's control API at ``url``, its errors turned into messages that say what to do."""
    url = url.rstrip("/")
    try:
        response = httpx.request(method, f"{url}{path}", json=body, timeout=5.0)
    except httpx.TransportError as exc:
        raise ServiceUnavailable(
            f"the simulator is not answering at {url} ({type(exc).__name__}); start it with `switchyard up "
            "--simulate` or `python -m simulator`, or set SWITCHYARD_SIMULATOR_URL to where it runs"
        ) from None
    data: Json = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code == 404:
        raise NotFound(f"the simulator at {url}: {data.get('error', 'not found')}")
    if response.status_code == 422:
        raise InputError(f"the simulator refused the change: {data.get('error')}")
    if response.is_error:
        raise ServiceUnavailable(f"the simulator at {url} answered HTTP {response.status_code}")
    return data
