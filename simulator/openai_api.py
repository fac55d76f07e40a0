"""OpenAI wire formats for the simulator: ``POST /v1/responses`` (plain and SSE) and ``/v1/chat/completions``.

Responses streaming sends ``response.created``, ``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta``…, ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done`` and ``response.completed`` (or
``response.incomplete`` when ``max_output_tokens`` cut the answer), each with a ``sequence_number``.
"""

from __future__ import annotations

import json
import time
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

CACHE_MIN_TOKENS, CACHE_STEP = 1024, 128  # OpenAI caches prompts of 1024+ tokens in 128-token steps
ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", "context_length_exceeded"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", "invalid_value"),
    429: ("requests", "rate_limit_exceeded"),
}
MESSAGES = {  # what the OpenAI API says for these statuses
    400: "Your input exceeds the context window of this model. Please adjust your input and try again.",
    404: "The model `{model}` does not exist or you do not have access to it.",
    413: "Request too large: the request body exceeds the maximum size allowed.",
    422: "Invalid value for 'input': the request could not be processed.",
}


def _model(body: Json) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter")
    return model


def parse_responses(body: Json, endpoint: str) -> Call:
    raw, instructions = body.get("input"), text_of(body.get("instructions"))
    if isinstance(raw, str):
        system, prompt, chars = "", raw, len(raw)
    else:
        system, prompt, chars = split_messages(raw)
    system = "\n".join(part for part in (instructions, system) if part)
    max_tokens, stream = int_field(body, "max_output_tokens"), body.get("stream") is True
    return Call("codex", _model(body), system, prompt, chars, max_tokens, stream, endpoint)


def parse_chat(body: Json, endpoint: str) -> Call:
    if body.get("stream") is True:
        raise BadRequest("the simulator answers chat completions only with stream=false; use /v1/responses")
    system, prompt, chars = split_messages(body.get("messages"))
    max_tokens = int_field(body, "max_completion_tokens") or int_field(body, "max_tokens")
    return Call("codex", _model(body), system, prompt, chars, max_tokens, False, endpoint)


def _counts(reply: Reply) -> tuple[int, int]:
    """(cached input tokens, reasoning tokens) for a reply."""
    cached = (reply.input_tokens // 2) // CACHE_STEP * CACHE_STEP if reply.input_tokens >= CACHE_MIN_TOKENS else 0
    return cached, 32 + reply.output_tokens // 2


def usage(reply: Reply) -> Json:
    """``input_tokens`` include the cached ones; ``output_tokens`` include the reasoning ones."""
    cached, reasoning = _counts(reply)
    output = reply.output_tokens + reasoning
    return {
        "input_tokens": reply.input_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": reply.input_tokens + output,
    }


def _item(reply: Reply, text: str, status: str) -> Json:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if text else []
    return {
        "id": f"msg_{reply.id}",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def _response(reply: Reply, call: Call, *, done: bool) -> Json:
    status = ("incomplete" if reply.truncated else "completed") if done else "in_progress"
    return {
        "id": f"resp_{reply.id}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": reply.model,
        "instructions": call.system or None,
        "output": [_item(reply, reply.text, "completed")] if done else [],
        "incomplete_details": {"reason": "max_output_tokens"} if done and reply.truncated else None,
        "error": None,
        "max_output_tokens": call.max_tokens,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage(reply) if done else None,
    }


def events(call: Call, reply: Reply) -> Iterator[Json]:
    item_id, where = f"msg_{reply.id}", {"output_index": 0}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    yield {"type": "response.created", "response": _response(reply, call, done=False)}
    yield {"type": "response.in_progress", "response": _response(reply, call, done=False)}
    yield {"type": "response.output_item.added", **where, "item": _item(reply, "", "in_progress")}
    yield {
        "type": "response.content_part.added",
        "item_id": item_id,
        **where,
        "content_index": 0,
        "part": part,
    }
    for piece in reply.chunks():
        delta = {"item_id": item_id, **where, "content_index": 0, "delta": piece, "logprobs": []}
        yield {"type": "response.output_text.delta", **delta}
    text = {"item_id": item_id, **where, "content_index": 0}
    yield {"type": "response.output_text.done", **text, "text": reply.text, "logprobs": []}
    yield {"type": "response.content_part.done", **text, "part": {**part, "text": reply.text}}
    yield {"type": "response.output_item.done", **where, "item": _item(reply, reply.text, "completed")}
    final = "response.incomplete" if reply.truncated else "response.completed"
    yield {"type": final, "response": _response(reply, call, done=True)}


def sse(call: Call, reply: Reply) -> Iterator[str]:
    for number, event in enumerate(events(call, reply)):
        yield f"event: {event['type']}\ndata: {json.dumps({**event, 'sequence_number': number})}\n\n"


def render_responses(call: Call, reply: Reply) -> Response:
    if call.stream:
        return StreamingResponse(sse(call, reply), media_type="text/event-stream")
    return JSONResponse(_response(reply, call, done=True))


def render_chat(call: Call, reply: Reply) -> Response:
    cached, reasoning = _counts(reply)
    message = {"role": "assistant", "content": reply.text, "refusal": None}
    choice = {"index": 0, "message": message, "finish_reason": "length" if reply.truncated else "stop"}
    completion = reply.output_tokens + reasoning
    counts = {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": completion,
        "total_tokens": reply.input_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    body = {"id": f"chatcmpl-{reply.id}", "object": "chat.completion", "created": int(time.time())}
    return JSONResponse({**body, "model": reply.model, "choices": [choice], "usage": counts})


def error(status: int, message: str) -> Response:
    kind, code = ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


RESPONSES = Dialect("codex", parse_responses, render_responses, error, MESSAGES)
CHAT = Dialect("codex", parse_chat, render_chat, error, MESSAGES)
