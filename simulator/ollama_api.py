"""Ollama wire format for the simulator: ``POST /api/chat``, ``POST /api/generate`` (JSON or NDJSON stream).

The final object (``done: true``) carries ``done_reason`` and the counts and durations (nanoseconds) a real
server reports. Durations are computed from the token counts, so they are deterministic.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

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

LOAD_NS, PROMPT_NS_PER_TOKEN, EVAL_NS_PER_TOKEN = 12_000_000, 400_000, 20_000_000  # a 7B model on one GPU
MESSAGES = {  # what an Ollama server says for these statuses
    400: "the input length exceeds the context length",
    404: 'model "{model}" not found, try pulling it first',
    413: "http: request body too large",
    422: "invalid options: num_predict",
}


def _common(body: Json) -> tuple[str, int | None, bool]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise BadRequest("options must be an object")
    return model, int_field(options, "num_predict"), body.get("stream", True) is not False


def parse_chat(body: Json, endpoint: str) -> Call:
    model, max_tokens, stream = _common(body)
    system, prompt, chars = split_messages(body.get("messages"))
    return Call("ollama", model, system, prompt, chars, max_tokens, stream, endpoint)


def parse_generate(body: Json, endpoint: str) -> Call:
    model, max_tokens, stream = _common(body)
    prompt, system = text_of(body.get("prompt")), text_of(body.get("system"))
    return Call("ollama", model, system, prompt, len(prompt), max_tokens, stream, endpoint)


def stats(reply: Reply) -> Json:
    prompt_ns = reply.input_tokens * PROMPT_NS_PER_TOKEN
    eval_ns = reply.output_tokens * EVAL_NS_PER_TOKEN
    return {
        "done_reason": "length" if reply.truncated else "stop",
        "total_duration": LOAD_NS + prompt_ns + eval_ns,
        "load_duration": LOAD_NS,
        "prompt_eval_count": reply.input_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": reply.output_tokens,
        "eval_duration": eval_ns,
    }


def _piece(call: Call, reply: Reply, text: str) -> Json:
    created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    if call.endpoint == "/api/generate":
        return {"model": reply.model, "created_at": created, "response": text}
    return {"model": reply.model, "created_at": created, "message": {"role": "assistant", "content": text}}


def _final(call: Call, reply: Reply, text: str) -> Json:
    extra: dict[str, Any] = {"context": []} if call.endpoint == "/api/generate" else {}
    return {**_piece(call, reply, text), "done": True, **stats(reply), **extra}


def ndjson(call: Call, reply: Reply) -> Iterator[str]:
    for piece in reply.chunks():
        yield json.dumps({**_piece(call, reply, piece), "done": False}) + "\n"
    yield json.dumps(_final(call, reply, "")) + "\n"


def render(call: Call, reply: Reply) -> Response:
    if call.stream:
        return StreamingResponse(ndjson(call, reply), media_type="application/x-ndjson")
    return JSONResponse(_final(call, reply, reply.text))


def error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def tags(models: list[str]) -> Json:
    details = {"format": "gguf", "family": "qwen2", "parameter_size": "7.6B", "quantization_level": "Q4_K_M"}
    entries = [
        {
            "name": name,
            "model": name,
            "modified_at": "2025-01-01T00:00:00Z",
            "size": 4_683_087_332,
            "digest": f"sim{index:061d}",
            "details": details,
        }
        for index, name in enumerate(models)
    ]
    return {"models": entries}


CHAT = Dialect("ollama", parse_chat, render, error, MESSAGES)
GENERATE = Dialect("ollama", parse_generate, render, error, MESSAGES)
