"""Anthropic Messages API wire format for the simulator: ``POST /v1/messages``, plain JSON and SSE.

Streaming follows the documented event order: ``message_start``, ``ping``, ``content_block_start``,
``content_block_delta`` (``text_delta``)…, ``content_block_stop``, ``message_delta`` (``stop_reason`` and the
cumulative ``usage``), ``message_stop``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from starlette.responses import JSONResponse, Response, StreamingResponse

from simulator.agent import AgentTurn, ToolResult, working_directory
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
    turn = agent_turn(body)
    return Call("claude", model, system, prompt, chars, max_tokens, stream, endpoint, turn)


def _blocks(message: object) -> list[Json]:
    content = message.get("content") if isinstance(message, dict) else None
    return [block for block in content if isinstance(block, dict)] if isinstance(content, list) else []


def agent_turn(body: Json) -> AgentTurn | None:
    """The tools a request offers (Claude Code's), its working directory and the ``tool_result``-s so far."""
    tools = body.get("tools")
    names = (
        frozenset(t["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str))
        if isinstance(tools, list)
        else frozenset()
    )
    if not names:
        return None
    messages = body.get("messages")
    if not isinstance(messages, list):
        messages = []
    uses: dict[str, tuple[str, Json]] = {}
    results: list[ToolResult] = []
    texts: list[str] = []
    for message in messages:
        texts.append(text_of(message.get("content") if isinstance(message, dict) else None))
        for block in _blocks(message):
            if block.get("type") == "tool_use":
                tool_input = block.get("input")
                uses[str(block.get("id"))] = (
                    str(block.get("name")),
                    tool_input if isinstance(tool_input, dict) else {},
                )
            elif block.get("type") == "tool_result":
                name, tool_input = uses.get(str(block.get("tool_use_id")), ("?", {}))
                content = block.get("content")
                output = content if isinstance(content, str) else text_of(content)
                results.append(ToolResult(name, tool_input, output, block.get("is_error") is True))
    return AgentTurn(names, working_directory(texts), tuple(results))


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
    if reply.tool_calls:
        return "tool_use"
    return "max_tokens" if reply.truncated else "end_turn"


def content(reply: Reply) -> list[Json]:
    """The text block (when there is text or nothing else) and a ``tool_use`` block per tool call."""
    blocks: list[Json] = [{"type": "text", "text": reply.text}] if reply.text or not reply.tool_calls else []
    for call in reply.tool_calls:
        blocks.append({"type": "tool_use", "id": f"toolu_{call.call_id}", "name": call.name, "input": call.input})
    return blocks


def _pieces(text: str, size: int = 48) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def events(reply: Reply) -> Iterator[tuple[str, Json]]:
    start = _message(reply, content=[], stop=None, output_tokens=1)
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    for index, block in enumerate(content(reply)):
        where: Json = {"index": index}
        if block["type"] == "text":
            opened: Json = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in reply.chunks()]
        else:  # the input arrives as pieces of its JSON text
            opened = {**block, "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": piece} for piece in _pieces(json.dumps(block["input"]))
            ]
        yield "content_block_start", {"type": "content_block_start", **where, "content_block": opened}
        for delta in deltas:
            yield "content_block_delta", {"type": "content_block_delta", **where, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", **where}
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
    body = _message(reply, content=content(reply), stop=stop_reason(reply), output_tokens=reply.output_tokens)
    return JSONResponse(body)


def error(status: int, message: str) -> Response:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_simulated"}
    return JSONResponse(body, status_code=status)


DIALECT = Dialect("claude", parse, render, error, MESSAGES)
