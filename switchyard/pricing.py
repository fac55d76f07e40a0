"""What a call cost: normalized token usage times an effective-dated price, in integer micro-dollars.

Prices are USD per million tokens, so ``tokens * price`` is already in micro-dollars (USD * 1e6). Every
product is summed exactly as a :class:`~decimal.Decimal` and rounded half-up once, at the end. Reasoning
tokens are part of ``output_tokens`` (see :mod:`providers.base`) and are never billed a second time.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from switchyard.fleet import Price
from switchyard.usage import Usage

CACHE_WRITE_5M_FACTOR = Decimal("1.25")  # Anthropic: a 5-minute cache write costs 1.25x the input price
CACHE_WRITE_1H_FACTOR = Decimal("2")  # Anthropic: a 1-hour cache write costs 2x the input price


def _dec(value: float) -> Decimal:
    """A price as the decimal it was written as (``0.175``), not its binary float approximation."""
    return Decimal(repr(value))


def rates(price: Price) -> dict[str, Decimal]:
    """USD per million tokens for each normalized token class of :class:`Usage`."""
    base = _dec(price.input)
    write_5m = _dec(price.cache_write_5m) if price.cache_write_5m is not None else base * CACHE_WRITE_5M_FACTOR
    write_1h = _dec(price.cache_write_1h) if price.cache_write_1h is not None else base * CACHE_WRITE_1H_FACTOR
    return {
        "input_tokens": base,
        "cached_input_tokens": _dec(price.cache_read),
        "cache_write_tokens": write_5m,
        "cache_write_1h_tokens": write_1h,
        "output_tokens": _dec(price.output),
    }


def cost_micros(usage: Usage, price: Price) -> int:
    """The cost of ``usage`` at ``price`` in micro-dollars, rounded half-up once."""
    total = Decimal(0)
    for field, rate in rates(price).items():
        tokens: int = getattr(usage, field)
        if tokens < 0:
            raise ValueError(f"usage.{field} is negative ({tokens}); token counts cannot be below zero")
        total += Decimal(tokens) * rate
    return int(total.to_integral_value(rounding=ROUND_HALF_UP))


def micros_to_usd(micros: int) -> Decimal:
    """Micro-dollars as an exact USD decimal, for reports (``1_234_567`` → ``Decimal('1.234567')``)."""
    return Decimal(micros).scaleb(-6)
