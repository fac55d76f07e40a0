"""What a provider reports it used, normalized so that pricing never needs to know which wire format it came from.

``input_tokens`` are the input tokens billed at the full input price (cached reads excluded),
``cached_input_tokens`` are cache reads, ``cache_write_tokens`` cache writes (5-minute),
``cache_write_1h_tokens`` one-hour cache writes, ``output_tokens`` include ``reasoning_tokens``,
and ``compute_seconds`` is the local compute a free provider (Ollama) spent.

It lives in the foundation because the provider clients produce it, the pricing and the ledger read it and
the store keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass


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
