"""The simulator's shared parts: one normalized call, its reply, and the per-provider fault state.

Each wire format (``simulator_anthropic``, ``simulator_openai``, ``simulator_ollama``) is a :class:`Dialect`:
it parses its request body into a :class:`Call`, renders a :class:`Reply`, and shapes its errors.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response

from simulator import agent, answers
from switchyard.fleet import SimulatorProviderConfig

PROVIDERS = ("claude", "codex", "ollama")
DEFAULT_HANG_MS = 30_000
NOT_FOUND = 404
Json = dict[str, Any]


class BadRequest(Exception):
    """The request body is not what the wire format expects; answered with a 400 in the provider's shape."""


@dataclass(frozen=True)
class Call:
    provider: str
    model: str
    system: str
    prompt: str
    context_chars: int = 0  # characters of every message, not only the last prompt
    max_tokens: int | None = None
    stream: bool = False
    endpoint: str = ""
    agent: agent.AgentTurn | None = None  # set when the request offers tools (an agent CLI)


@dataclass(frozen=True)
class Reply:
    id: str
    model: str
    text: str
    input_tokens: int  # every input token, cached or not
    system_tokens: int
    output_tokens: int
    truncated: bool
    tool_calls: tuple[agent.ToolCall, ...] = ()  # when set, the answer is these calls (and ``text`` if any)
    reasoning_tokens: int = 0  # inside ``output_tokens``' limit, not in them (the OpenAI dialect adds them)

    def chunks(self, size: int = 24) -> list[str]:
        return [self.text[i : i + size] for i in range(0, len(self.text), size)] or [""]


@dataclass(frozen=True)
class Dialect:
    """One wire format. ``messages`` are its providers' own texts for scripted error statuses, with ``{model}``
    for the model the request named (a 404 says which model does not exist, as the real APIs do)."""

    provider: str
    parse: Callable[[Json, str], Call]
    render: Callable[[Call, Reply], Response]
    error: Callable[[int, str], Response]
    messages: Mapping[int, str] = field(default_factory=dict)


def reasoning(provider: str, visible_tokens: int) -> int:
    """The reasoning tokens a reply of ``visible_tokens`` spends before it: OpenAI's models reason, the others
    here answer at once."""
    return 32 + visible_tokens // 2 if provider == "codex" else 0


def make_reply(call: Call, reply_id: str) -> Reply:
    """The reply to ``call``. ``max_tokens`` bounds every output token, reasoning included, as the real APIs do
    (Anthropic's ``max_tokens``, OpenAI's ``max_output_tokens``, Ollama's ``num_predict``): an answer that
    would pass it is cut there (``truncated``), its reasoning then taking at most half of the limit."""
    system_tokens = answers.tokens(call.system)
    input_tokens = max(system_tokens + (max(call.context_chars, len(call.prompt)) + 3) // 4, 1)
    kind = answers.task_kind(call.system, call.prompt)
    step = agent.step(kind, call.prompt, call.agent, reply_id) if call.agent is not None else None
    if step is not None and step.calls:  # tool calls are never cut short
        out = answers.tokens(step.text + "".join(agent.arguments_text(c) for c in step.calls))
        thought = reasoning(call.provider, out)
        return Reply(reply_id, call.model, step.text, input_tokens, system_tokens, out, False, step.calls, thought)
    text = step.text if step is not None else answers.answer(call.system, call.prompt)
    out = answers.tokens(text)
    thought, limit = reasoning(call.provider, out), call.max_tokens
    truncated = limit is not None and 0 < limit < out + thought
    if truncated and limit is not None:
        thought = min(thought, limit // 2)
        out = limit - thought
        text = text[: out * 4]
    return Reply(reply_id, call.model, text, input_tokens, system_tokens, out, truncated, (), thought)


def text_of(content: object) -> str:
    """Text of a message ``content``: a string, or a list of blocks that carry ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))
    return ""


def _is_tool_result(content: object) -> bool:
    return isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)


def split_messages(messages: object, system_roles: tuple[str, ...] = ("system", "developer")) -> tuple[str, str, int]:
    """(system text, last user text, characters of all messages) from a chat-style message list.

    A user message that carries tool results (an agent CLI's next turn) is not the prompt: the task's prompt
    stays the last user message written as text."""
    if not isinstance(messages, list):
        raise BadRequest("messages must be a list")
    system, prompt, chars = [], "", 0
    for message in messages:
        if not isinstance(message, dict):
            raise BadRequest("each message must be an object")
        text = text_of(message.get("content"))
        chars += len(text) or len(json.dumps(message))  # tool calls and results count too
        if message.get("role") in system_roles:
            system.append(text)
        elif message.get("role") == "user" and not _is_tool_result(message.get("content")):
            prompt = text
    return "\n".join(system), prompt, chars


def int_field(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{key} must be an integer")
    return value


FaultKind = int | Literal["timeout", "reset", "malformed"]  # reset, malformed: simulator/breakage.py


class ProviderUpdate(BaseModel):
    """Body of ``POST /_sim/providers/{provider}``: every field optional, unknown fields refused."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: int | None = Field(default=None, ge=0, le=600_000)
    error_rate: float | None = Field(default=None, ge=0, le=1)
    error_status: FaultKind | None = Field(default=None)
    retry_after_s: float | None = Field(default=None, ge=0, le=3600)
    fail_next: int | None = Field(default=None, ge=0, le=1_000_000)
    hang_ms: int | None = Field(default=None, ge=0, le=600_000)
    missing_models: list[str] | None = Field(default=None, max_length=100)  # answered 404 model not found

    @field_validator("error_status")
    @classmethod
    def _http_error(cls, value: FaultKind | None) -> FaultKind | None:
        if isinstance(value, int) and not 400 <= value <= 599:
            raise ValueError(f"error_status must be an HTTP error status 400-599 or 'timeout', got {value}")
        return value


@dataclass
class ProviderState:
    latency_ms: int
    error_rate: float
    error_status: FaultKind
    retry_after_s: float = 1.0
    fail_next: int = 0
    hang_ms: int = DEFAULT_HANG_MS
    missing_models: list[str] = field(default_factory=list)
    calls: int = 0
    errors: int = 0
    answered: int = 0  # calls answered with a whole reply: what a provider would bill (the chaos suite reads it)
    defaults: SimulatorProviderConfig = field(default_factory=SimulatorProviderConfig, repr=False)

    @classmethod
    def from_config(cls, config: SimulatorProviderConfig) -> ProviderState:
        return cls(config.latency_ms, config.error_rate, config.error_status, defaults=config)

    def heal(self) -> None:
        """Back to the configured latency with no faults; the counters stay."""
        self.latency_ms, self.error_rate = self.defaults.latency_ms, 0.0
        self.error_status, self.fail_next = self.defaults.error_status, 0
        self.missing_models = []

    def view(self) -> Json:
        view = asdict(self)
        del view["defaults"]
        return view


class SimState:
    """Faults, latency and call counters per provider. Used only from the server's event loop."""

    def __init__(self, config: Mapping[str, SimulatorProviderConfig], rng: random.Random) -> None:
        self.config = {name: config.get(name, SimulatorProviderConfig()) for name in PROVIDERS}
        self.rng = rng
        self.providers = {name: ProviderState.from_config(cfg) for name, cfg in self.config.items()}
        self.served = 0

    def begin_call(self, provider: str, model: object = None) -> FaultKind | None:
        """Count a call and decide whether it fails: a missing model (404) first, then ``fail_next``, then
        ``error_rate``."""
        state = self.providers[provider]
        state.calls += 1
        self.served += 1
        fault: FaultKind | None = None
        if model in state.missing_models:
            fault = NOT_FOUND
        elif state.fail_next > 0:
            state.fail_next -= 1
            fault = state.error_status
        elif state.error_rate > 0 and self.rng.random() < state.error_rate:
            fault = state.error_status
        if fault is not None:
            state.errors += 1
        return fault

    def update(self, provider: str, change: ProviderUpdate) -> None:
        state = self.providers[provider]
        for key, value in change.model_dump(exclude_none=True).items():
            setattr(state, key, value)

    def reset(self) -> None:
        self.providers = {name: ProviderState.from_config(cfg) for name, cfg in self.config.items()}

    def snapshot(self) -> Json:
        return {
            "providers": {name: state.view() for name, state in self.providers.items()},
            "served": self.served,
        }
