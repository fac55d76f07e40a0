"""Codex over the OpenAI Responses API (``openai`` SDK), SDK retries off: tenacity is the one retry loop.

OpenAI counts cached tokens inside ``input_tokens``; normalized ``input_tokens`` are ``input_tokens -
cached_tokens``. ``reasoning_tokens`` are reported and stay inside ``output_tokens`` (never billed twice).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx2
import openai
from openai.types.responses import Response, ResponseUsage

from providers.base import ProviderRequest, ProviderResponse
from providers.http_errors import error_for_status, parse_retry_after, scrub, transport_error
from switchyard.errors import BadAnswer, ProviderDown, ProviderError, RateLimited, TransientError
from switchyard.usage import Usage

FINAL_EVENTS = ("response.completed", "response.incomplete")


def normalize_usage(usage: ResponseUsage | None) -> Usage:
    if usage is None:
        return Usage()
    input_details = getattr(usage, "input_tokens_details", None)
    output_details = getattr(usage, "output_tokens_details", None)
    cached: int = getattr(input_details, "cached_tokens", 0) or 0
    reasoning: int = getattr(output_details, "reasoning_tokens", 0) or 0
    return Usage(
        input_tokens=max(usage.input_tokens - cached, 0),
        cached_input_tokens=cached,
        output_tokens=usage.output_tokens,
        reasoning_tokens=reasoning,
    )


def _body_message(body: object) -> str | None:
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) else None


class CodexProvider:
    """``call`` sends ``instructions`` and ``input``; ``stream=True`` reads SSE events to the final one."""

    name = "codex"
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
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)

    def __repr__(self) -> str:
        return f"CodexProvider(base_url={self.base_url!r}, timeout={self.timeout})"

    def close(self) -> None:
        """Close the SDK client's connection pool."""
        self._client.close()

    def call(self, request: ProviderRequest) -> ProviderResponse:
        started = self._monotonic()
        timeout = min(self.timeout, request.timeout_s)
        try:
            response = self._stream(request, timeout) if self.stream else self._create(request, timeout)
        except (openai.OpenAIError, httpx2.TransportError) as exc:
            raise self._error(exc, timeout) from None
        except json.JSONDecodeError as exc:  # a 200 whose body is not JSON: the SDK lets the decoder's error out
            raise BadAnswer(f"{self.name}: the answer is not JSON ({exc.msg})", provider=self.name) from None
        if response.status == "failed":
            raise self._failed(response)
        details = response.incomplete_details
        return ProviderResponse(
            provider=self.name,
            model=response.model,
            transport=self.transport,
            text=response.output_text,
            usage=normalize_usage(response.usage),
            latency_ms=(self._monotonic() - started) * 1000,
            stop_reason=(details.reason if details else None) or response.status,
            response_id=response.id,
        )

    def _create(self, request: ProviderRequest, timeout: float) -> Response:
        return self._client.responses.create(
            model=request.model,
            instructions=request.system,
            input=request.prompt,
            max_output_tokens=request.max_output_tokens,
            timeout=timeout,
        )

    def _stream(self, request: ProviderRequest, timeout: float) -> Response:
        events = self._client.responses.create(
            model=request.model,
            instructions=request.system,
            input=request.prompt,
            max_output_tokens=request.max_output_tokens,
            timeout=timeout,
            stream=True,
        )
        with events:
            for event in events:
                if event.type in FINAL_EVENTS or event.type == "response.failed":
                    return event.response  # type: ignore[union-attr]  # these three events carry it
                if event.type == "error":
                    raise TransientError(
                        f"{self.name}: stream error: {scrub(event.message, self._api_key)}",
                        provider=self.name,
                    )
        raise TransientError(f"{self.name}: the stream ended without a final response event", provider=self.name)

    def _failed(self, response: Response) -> ProviderError:
        error = response.error
        code, message = (error.code, scrub(error.message, self._api_key)) if error else ("unknown", "")
        if code == "rate_limit_exceeded":
            return RateLimited(f"{self.name}: {message}", provider=self.name, status=429)
        return TransientError(f"{self.name}: response failed ({code}): {message}", provider=self.name)

    def _error(self, exc: openai.OpenAIError | httpx2.TransportError, timeout: float) -> ProviderError:
        if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
            return transport_error(self.name, "timed out", timeout)
        if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
            return transport_error(self.name, f"connection failed ({type(exc).__name__})")
        message = scrub(_body_message(getattr(exc, "body", None)) or str(exc), self._api_key)
        if isinstance(exc, openai.APIStatusError):
            headers = exc.response.headers
            retry_after = parse_retry_after(headers.get("retry-after"), headers.get("retry-after-ms"))
            return error_for_status(exc.status_code, message, provider=self.name, retry_after=retry_after)
        if isinstance(exc, openai.APIResponseValidationError):
            return BadAnswer(f"{self.name}: unexpected answer: {message}", provider=self.name, status=exc.status_code)
        if isinstance(exc, openai.APIError):  # an error inside a stream that had started fine
            return TransientError(f"{self.name}: {message}", provider=self.name)
        return ProviderDown(f"{self.name}: {type(exc).__name__}: {message}", provider=self.name)
