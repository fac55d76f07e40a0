"""OpenAI wire formats for the simulator: ``POST /v1/responses`` (plain and SSE) and ``/v1/chat/completions``.

Responses streaming sends ``response.created``, ``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta``…, ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done`` and ``response.completed`` (or
``response.incomplete`` when ``max_output_tokens`` cut the answer), each with a ``sequence_number``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

from starlette.responses import JSONResponse, Response, StreamingResponse

from simulator.agent import AgentTurn, ToolCall, ToolResult, arguments_text, working_directory
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

# how Codex reports a call that worked (a command, or a patch it applied); anything else, e.g. "apply_patch
# verification failed: …" or "Exit code: 1", is a failed call
CODEX_OK_RE = re.compile(r"^(?:Exit code: 0|Success\.)", re.MULTILINE)
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
    turn = agent_turn(body)
    return Call("codex", _model(body), system, prompt, chars, max_tokens, stream, endpoint, turn)


def _call_input(item: Json) -> Json | str:
    if item.get("type") == "custom_tool_call":
        return str(item.get("input") or "")
    try:
        arguments = json.loads(str(item.get("arguments") or "{}"))
    except ValueError:
        return {}
    return arguments if isinstance(arguments, dict) else {}


def agent_turn(body: Json) -> AgentTurn | None:
    """The tools a Responses request offers (the Codex CLI's), its working directory, the call outputs so far."""
    tools = body.get("tools")
    listed = tools if isinstance(tools, list) else []
    names = frozenset(t["name"] for t in listed if isinstance(t, dict) and isinstance(t.get("name"), str))
    raw = body.get("input")
    if not names or not isinstance(raw, list):
        return None
    calls: dict[str, tuple[str, Json | str]] = {}
    results: list[ToolResult] = []
    texts: list[str] = []
    for item in (entry for entry in raw if isinstance(entry, dict)):
        kind = item.get("type")
        texts.append(text_of(item.get("content")))
        if kind in ("function_call", "custom_tool_call"):
            calls[str(item.get("call_id"))] = (str(item.get("name")), _call_input(item))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            name, tool_input = calls.get(str(item.get("call_id")), ("?", {}))
            output = item.get("output")
            text = output if isinstance(output, str) else text_of(output)
            results.append(ToolResult(name, tool_input, text, CODEX_OK_RE.search(text) is None))
    return AgentTurn(names, working_directory(texts), tuple(results))


def parse_chat(body: Json, endpoint: str) -> Call:
    if body.get("stream") is True:
        raise BadRequest("the simulator answers chat completions only with stream=false; use /v1/responses")
    system, prompt, chars = split_messages(body.get("messages"))
    max_tokens = int_field(body, "max_completion_tokens") or int_field(body, "max_tokens")
    return Call("codex", _model(body), system, prompt, chars, max_tokens, False, endpoint)


def _counts(reply: Reply) -> tuple[int, int]:
    """(cached input tokens, reasoning tokens) for a reply."""
    cached = (reply.input_tokens // 2) // CACHE_STEP * CACHE_STEP if reply.input_tokens >= CACHE_MIN_TOKENS else 0
    return cached, reply.reasoning_tokens


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


def _tool_item(call: ToolCall, status: str, *, filled: bool = True) -> Json:
    """A ``function_call`` item (JSON ``arguments``) or, for a freeform tool, a ``custom_tool_call`` (``input``)."""
    base = {"id": f"fc_{call.call_id}", "call_id": f"call_{call.call_id}", "name": call.name, "status": status}
    if isinstance(call.input, str):
        return {"type": "custom_tool_call", **base, "input": call.input if filled else ""}
    return {"type": "function_call", **base, "arguments": arguments_text(call) if filled else ""}


def _output(reply: Reply) -> list[Json]:
    message = [_item(reply, reply.text, "completed")] if reply.text or not reply.tool_calls else []
    return message + [_tool_item(call, "completed") for call in reply.tool_calls]


def _response(reply: Reply, call: Call, *, done: bool) -> Json:
    status = ("incomplete" if reply.truncated else "completed") if done else "in_progress"
    return {
        "id": f"resp_{reply.id}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": reply.model,
        "instructions": call.system or None,
        "output": _output(reply) if done else [],
        "incomplete_details": {"reason": "max_output_tokens"} if done and reply.truncated else None,
        "error": None,
        "max_output_tokens": call.max_tokens,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage(reply) if done else None,
    }


def tool_events(call: ToolCall, index: int) -> Iterator[Json]:
    """One tool call's item: added, its arguments (or freeform input) in pieces, done."""
    item, where = _tool_item(call, "completed"), {"item_id": f"fc_{call.call_id}", "output_index": index}
    yield {
        "type": "response.output_item.added",
        "output_index": index,
        "item": _tool_item(call, "in_progress", filled=False),
    }
    text = arguments_text(call)
    stem = "response.custom_tool_call_input" if isinstance(call.input, str) else "response.function_call_arguments"
    for start in range(0, len(text), 48):
        yield {"type": f"{stem}.delta", **where, "delta": text[start : start + 48]}
    done_key = "input" if isinstance(call.input, str) else "arguments"
    yield {"type": f"{stem}.done", **where, done_key: text}
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


def events(call: Call, reply: Reply) -> Iterator[Json]:
    yield {"type": "response.created", "response": _response(reply, call, done=False)}
    yield {"type": "response.in_progress", "response": _response(reply, call, done=False)}
    if reply.text or not reply.tool_calls:
        yield from text_events(reply)
    first = 1 if reply.text or not reply.tool_calls else 0
    for index, tool_call in enumerate(reply.tool_calls, start=first):
        yield from tool_events(tool_call, index)
    final = "response.incomplete" if reply.truncated else "response.completed"
    yield {"type": final, "response": _response(reply, call, done=True)}


def text_events(reply: Reply) -> Iterator[Json]:
    """The message item at output index 0: added, its text in pieces, done."""
    item_id, where = f"msg_{reply.id}", {"output_index": 0}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
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
