"""What every provider client takes and returns, whatever its transport. The usage it reports is a
:class:`switchyard.usage.Usage`, normalized so that pricing never needs to know the wire format."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from switchyard.usage import Usage


@dataclass(frozen=True)
class ProviderRequest:
    """One call. ``system`` carries the task kind's instructions, ``prompt`` the material to work on."""

    model: str
    system: str
    prompt: str
    max_output_tokens: int = 2048
    timeout_s: float = 120.0
    metadata: dict[str, str] = field(default_factory=dict)
    # agent-CLI transports: the worktree the agent edits, the environment (for its private config
    # directory) and the dollars held for the attempt (the CLI stops at it)
    workdir: Path | None = None
    environment: str | None = None
    max_cost_usd: float | None = None


# the stop reasons of an answer cut by its output limit: Anthropic's ``stop_reason``, the OpenAI Responses API's
# ``incomplete_details.reason`` (chat completions' ``finish_reason``: ``length``), Ollama's ``done_reason``
LIMIT_REACHED = frozenset({"max_tokens", "max_output_tokens", "length"})


@dataclass(frozen=True)
class ProviderResponse:
    provider: str
    model: str
    transport: str
    text: str
    usage: Usage
    latency_ms: float
    stop_reason: str | None = None
    response_id: str | None = None
    # set when the provider reports its own price for the call (Claude Code's ``total_cost_usd``)
    reported_cost_usd: float | None = None

    @property
    def cut_short(self) -> bool:
        """The answer stopped at the call's output limit (``max_output_tokens``), not where the model ended it."""
        return self.stop_reason in LIMIT_REACHED


class Provider(Protocol):
    """A provider client over one transport. Raises only :class:`switchyard.errors.ProviderError` subclasses."""

    name: str
    transport: str

    def call(self, request: ProviderRequest) -> ProviderResponse: ...

    def close(self) -> None:
        """Release the client's connections."""
