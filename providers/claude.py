"""Claude over the Anthropic Messages API (``anthropic`` SDK); SDK retries are off, tenacity is the one loop.

Usage is normalized as :mod:`providers.base` says: ``input_tokens`` already excludes cached reads,
``cache_read_input_tokens`` become ``cached_input_tokens``, and the ``cache_creation`` split becomes
5-minute (``cache_write_tokens``) and 1-hour (``cache_write_1h_tokens``) writes; an unsplit
``cache_creation_input_tokens`` counts as 5-minute writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import anthropic
import httpx2
from anthropic.types import Message, TextBlock
from anthropic.types import Usage as AnthropicUsage

from providers.base import ProviderRequest, ProviderResponse
from providers.http_errors import (
    ANTHROPIC_TYPE_STATUS,
    error_for_status,
    parse_retry_after,
    scrub,
    transport_error,
)
from switchyard.errors import BadAnswer, ProviderDown, ProviderError
from switchyard.usage import Usage


def normalize_usage(usage: AnthropicUsage) -> Usage:
    written = usage.cache_creation_input_tokens or 0
    split = usage.cache_creation
    one_hour = split.ephemeral_1h_input_tokens if split else 0
    five_minutes = max(split.ephemeral_5m_input_tokens if split else 0, written - one_hour)
    details = usage.output_tokens_details
    return Usage(
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cache_read_input_tokens or 0,
        cache_write_tokens=five_minutes,
        cache_write_1h_tokens=one_hour,
        output_tokens=usage.output_tokens,
        reasoning_tokens=details.thinking_tokens if details else 0,
    )


class ClaudeProvider:
    """``call`` sends the system text and one user message; ``stream=True`` uses ``messages.stream``."""

    name = "claude"
    transport = "api"

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str,
        timeout: float,
        stream: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url, self.timeout, self.stream = base_url, timeout, stream
        self._api_key = api_key
        self._monotonic = monotonic
        self._client = anthropic.Anthropic(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)

    def __repr__(self) -> str:
        return f"ClaudeProvider(base_url={self.base_url!r}, timeout={self.timeout})"

    def close(self) -> None:
        """Close the SDK client's connection pool."""
        self._client.close()

    def call(self, request: ProviderRequest) -> ProviderResponse:
        started = self._monotonic()
        timeout = min(self.timeout, request.timeout_s)
        try:
            message = self._send(request, timeout)
        except (anthropic.AnthropicError, httpx2.TransportError) as exc:
            raise self._error(exc, timeout) from None
        except json.JSONDecodeError as exc:  # a 200 whose body is not JSON: the SDK lets the decoder's error out
            raise BadAnswer(f"{self.name}: the answer is not JSON ({exc.msg})", provider=self.name) from None
        return ProviderResponse(
            provider=self.name,
            model=message.model,
            transport=self.transport,
            text="".join(block.text for block in message.content if isinstance(block, TextBlock)),
            usage=normalize_usage(message.usage),
            latency_ms=(self._monotonic() - started) * 1000,
            stop_reason=message.stop_reason,
            response_id=message.id,
        )

    def _send(self, request: ProviderRequest, timeout: float) -> Message:
        messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": request.prompt}]
        if self.stream:
            with self._client.messages.stream(
                model=request.model,
                max_tokens=request.max_output_tokens,
                system=request.system,
                messages=messages,
                timeout=timeout,
            ) as events:
                return events.get_final_message()
        return self._client.messages.create(
            model=request.model,
            max_tokens=request.max_output_tokens,
            system=request.system,
            messages=messages,
            timeout=timeout,
        )

    def _error(self, exc: anthropic.AnthropicError | httpx2.TransportError, timeout: float) -> ProviderError:
        if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
            return transport_error(self.name, "timed out", timeout)
        if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
            return transport_error(self.name, f"connection failed ({type(exc).__name__})")
        if isinstance(exc, anthropic.APIStatusError):
            return self._status_error(exc)
        message = scrub(str(exc), self._api_key)
        if isinstance(exc, anthropic.APIResponseValidationError):
            return BadAnswer(f"{self.name}: unexpected answer: {message}", provider=self.name, status=exc.status_code)
        return ProviderDown(f"{self.name}: {type(exc).__name__}: {message}", provider=self.name)

    def _status_error(self, exc: anthropic.APIStatusError) -> ProviderError:
        status = exc.status_code
        if status < 400:  # an ``error`` event inside a 200 stream: its type says what happened
            status = ANTHROPIC_TYPE_STATUS.get(str(exc.type), 500)
        headers = exc.response.headers
        return error_for_status(
            status,
            scrub(exc.api_message or exc.message, self._api_key),
            provider=self.name,
            retry_after=parse_retry_after(headers.get("retry-after"), headers.get("retry-after-ms")),
            overloaded=exc.type == "overloaded_error",
        )
