"""What every provider client takes and returns, whatever its transport.

Usage is normalized so that pricing never needs to know which wire format it came from:
``input_tokens`` are the input tokens billed at the full input price (cached reads excluded),
``cached_input_tokens`` are cache reads, ``cache_write_tokens`` cache writes (5-minute),
``cache_write_1h_tokens`` one-hour cache writes, ``output_tokens`` include ``reasoning_tokens``,
and ``compute_seconds`` is the local compute a free provider (Ollama) spent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    compute_seconds: float = 0.0

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.cached_input_tokens
            + self.cache_write_tokens
            + self.cache_write_1h_tokens
            + self.output_tokens
        )


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


class Provider(Protocol):
    """A provider client over one transport. Raises only :class:`switchyard.errors.ProviderError` subclasses."""

    name: str
    transport: str

    def call(self, request: ProviderRequest) -> ProviderResponse: ...

    def close(self) -> None:
        """Release the client's connections."""
