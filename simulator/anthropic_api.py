"""Anthropic Messages API wire format for the simulator: ``POST /v1/messages``, plain JSON and SSE.

Streaming follows the documented event order: ``message_start``, ``ping``, ``content_block_start``,
``content_block_delta`` (``text_delta``)…, ``content_block_stop``, ``message_delta`` (``stop_reason`` and the
cumulative ``usage``), ``message_stop``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from starlette.responses import JSONResponse, Response, StreamingResponse

from simulator.core import (
    BadRequest,
    Call,
    Dialect,
    Json,
    Reply,
    int_field,
    split_messages,
    text_of,
)

CACHE_MIN_TOKENS = 1024  # Anthropic caches prompts of at least this many tokens
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

MESSAGES = {  # what the Messages API says for these statuses
    400: "prompt is too long: 215351 tokens > 200000 maximum",
    404: "model: {model}",
    413: "Request exceeds the maximum allowed number of bytes.",
    422: "messages.0.content: Input should be a valid list",
}


def parse(body: Json, endpoint: str) -> Call:
    model, max_tokens = body.get("model"), int_field(body, "max_tokens")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: Field required")
    if max_tokens is None:
        raise BadRequest("max_tokens: Field required")
    _, prompt, chars = split_messages(body.get("messages"), system_roles=())
    system = text_of(body.get("system"))
    stream = body.get("stream") is True
    return Call("claude", model, system, prompt, chars, max_tokens, stream, endpoint)


def usage(reply: Reply) -> Json:
    """Part of a long system prompt is read from the cache, a little is written to it; the rest is input."""
    cached = reply.system_tokens * 3 // 4 if reply.system_tokens >= CACHE_MIN_TOKENS else 0
    written = reply.system_tokens // 8 if cached else 0
    return {
        "input_tokens": reply.input_tokens - cached - written,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "cache_creation": {"ephemeral_5m_input_tokens": written, "ephemeral_1h_input_tokens": 0},
        "output_tokens": reply.output_tokens,
        "service_tier": "standard",
    }


def _message(reply: Reply, *, content: list[Json], stop: str | None, output_tokens: int) -> Json:
    return {
        "id": f"msg_{reply.id}",
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {**usage(reply), "output_tokens": output_tokens},
    }


def stop_reason(reply: Reply) -> str:
    return "max_tokens" if reply.truncated else "end_turn"


def events(reply: Reply) -> Iterator[tuple[str, Json]]:
    start = _message(reply, content=[], stop=None, output_tokens=1)
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    block = {"type": "text", "text": ""}
    yield "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
    for piece in reply.chunks():
        delta = {"type": "text_delta", "text": piece}
        yield "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    final = {key: value for key, value in usage(reply).items() if key not in ("cache_creation", "service_tier")}
    end: Json = {"stop_reason": stop_reason(reply), "stop_sequence": None}
    yield "message_delta", {"type": "message_delta", "delta": end, "usage": final}
    yield "message_stop", {"type": "message_stop"}


def sse(pairs: Iterator[tuple[str, Json]]) -> Iterator[str]:
    for event, data in pairs:
        yield f"event: {event}\ndata: {json.dumps(data)}\n\n"


def render(call: Call, reply: Reply) -> Response:
    if call.stream:
        return StreamingResponse(sse(events(reply)), media_type="text/event-stream")
    content = [{"type": "text", "text": reply.text}]
    return JSONResponse(_message(reply, content=content, stop=stop_reason(reply), output_tokens=reply.output_tokens))


def error(status: int, message: str) -> Response:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_simulated"}
    return JSONResponse(body, status_code=status)


DIALECT = Dialect("claude", parse, render, error, MESSAGES)
