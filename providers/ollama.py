"""Ollama over its HTTP API (``ollama`` SDK). The SDK has no retry loop of its own; tenacity is the one.

``prompt_eval_count`` becomes ``input_tokens``, ``eval_count`` ``output_tokens``, and ``total_duration``
(nanoseconds) ``compute_seconds``, so local work is visible in reports though it costs $0 in tokens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import ollama

from providers.base import ProviderRequest, ProviderResponse
from providers.http_errors import error_for_status, parse_retry_after, scrub, transport_error
from switchyard.errors import ProviderError, RequestRejected
from switchyard.usage import Usage


def normalize_usage(response: ollama.ChatResponse) -> Usage:
    return Usage(
        input_tokens=response.prompt_eval_count or 0,
        output_tokens=response.eval_count or 0,
        compute_seconds=(response.total_duration or 0) / 1e9,
    )


class OllamaProvider:
    """``call`` sends the system text and the prompt as two chat messages, ``num_predict`` as the cap."""

    name = "ollama"
    transport = "api"

    def __init__(
        self,
        *,
        host: str,
        timeout: float,
        api_key: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.timeout = host, timeout
        self._api_key = api_key
        self._monotonic = monotonic
        self._seen = threading.local()  # the last answer's retry-after, per calling thread
        headers = {"authorization": f"Bearer {api_key}"} if api_key else None
        self._client = ollama.Client(
            host=host, timeout=timeout, headers=headers, event_hooks={"response": [self._remember]}
        )

    def __repr__(self) -> str:
        return f"OllamaProvider(host={self.host!r}, timeout={self.timeout})"

    def _remember(self, response: httpx.Response) -> None:
        self._seen.retry_after = parse_retry_after(response.headers.get("retry-after"))

    def close(self) -> None:
        """Close the SDK client's connection pool."""
        self._client.close()  # type: ignore[no-untyped-call]  # the ollama SDK leaves close() unannotated

    def call(self, request: ProviderRequest) -> ProviderResponse:
        started = self._monotonic()
        messages = [
            {"role": "system", "content": request.system},
            {"role": "user", "content": request.prompt},
        ]
        try:
            response = self._client.chat(
                model=request.model, messages=messages, options={"num_predict": request.max_output_tokens}
            )
        except (ollama.ResponseError, ollama.RequestError, httpx.TransportError, ConnectionError) as exc:
            raise self._error(exc) from None
        return ProviderResponse(
            provider=self.name,
            model=response.model or request.model,
            transport=self.transport,
            text=response.message.content or "",
            usage=normalize_usage(response),
            latency_ms=(self._monotonic() - started) * 1000,
            stop_reason=response.done_reason,
            response_id=None,
        )

    def _error(
        self, exc: ollama.ResponseError | ollama.RequestError | httpx.TransportError | ConnectionError
    ) -> ProviderError:
        if isinstance(exc, httpx.TimeoutException):
            return transport_error(self.name, "timed out", self.timeout)
        if isinstance(exc, httpx.TransportError | ConnectionError):
            return transport_error(self.name, f"connection failed ({type(exc).__name__})")
        if isinstance(exc, ollama.RequestError):
            return RequestRejected(f"{self.name}: {scrub(str(exc.error), self._api_key)}", provider=self.name)
        status = exc.status_code if exc.status_code >= 400 else 500
        retry_after = getattr(self._seen, "retry_after", None) if status == 429 else None
        return error_for_status(
            status, scrub(str(exc.error), self._api_key), provider=self.name, retry_after=retry_after
        )
