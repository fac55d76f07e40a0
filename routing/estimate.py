"""How much an attempt can cost at most, before it is made: the amount the ledger holds for it.

No tokenizer is available offline (tiktoken downloads its tables; Anthropic counts tokens only over the
network), so the prompt's tokens are estimated from its length: one token per three characters, rounded up,
plus a fixed per-request overhead for roles and message framing. English prose runs about four characters
per token and source code about three and a half, so this errs high for the text the fleet sends. It is an
estimate, not a bound: text in scripts that take a token per character or more (CJK, emoji) can exceed it,
and the ledger's settlement records the real cost either way.

The output side is exact: a call never produces more than the output limit passed with it, the output held
(:mod:`routing.sizing`: a percentile of recent answers, or the kind's ``max_output_tokens``). Cache prices
only lower the bill on the api transport: we send no ``cache_control`` markers, so there are no cache
writes (the only token class priced above input), and cache reads cost less than input. The maximum is
therefore ``input tokens x input price + output held x output price``, rounded up to a whole micro-dollar,
which is never below :func:`switchyard.pricing.cost_micros` of that usage. The cli transport runs an agent for
several turns with its own caching; there the maximum is the cap to hand to the CLI (``--max-budget-usd``).
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from functools import lru_cache

from switchyard.fleet_models import Price
from switchyard.pricing import rates

CHARS_PER_TOKEN = 3
REQUEST_OVERHEAD_TOKENS = 32  # roles, message framing and the provider's own wrapping of the system prompt


def estimate_tokens(chars: int) -> int:
    """A deliberately high token count for ``chars`` characters of prompt: ``ceil(chars / 3) + 32``."""
    if chars < 0:
        raise ValueError(f"prompt length is negative ({chars}); a prompt has zero or more characters")
    return -(-chars // CHARS_PER_TOKEN) + REQUEST_OVERHEAD_TOKENS


@lru_cache(maxsize=4096)  # pure, and asked for every candidate of every attempt
def max_cost_micros(prompt_chars: int, max_output_tokens: int, price: Price) -> int:
    """The most one call can cost in micro-dollars: the estimated prompt plus a full output, rounded up."""
    if max_output_tokens < 0:
        raise ValueError(f"max_output_tokens is negative ({max_output_tokens}); it is zero or more")
    rate = rates(price)
    total = Decimal(estimate_tokens(prompt_chars)) * rate["input_tokens"]
    total += Decimal(max_output_tokens) * rate["output_tokens"]
    return int(total.to_integral_value(rounding=ROUND_CEILING))
