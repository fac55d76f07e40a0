"""The baseline: what the same usage would have cost on one model. Pure: token sums in, exact Decimal out.

Every attempt's real usage is repriced at the baseline model's price in force on the report's last day: input
at its input price, cache reads at its cache-read price, 5-minute and 1-hour cache writes at its write prices,
output (reasoning included; providers count reasoning inside output) at its output price. Ollama's tokens are
priced the same way: local work would have been paid work on the baseline. Repricing is linear in the token
sums, so repricing each group's sums gives the same exact Decimal as repricing each attempt and adding up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from switchyard.errors import ConfigError, InputError
from switchyard.fleet import Fleet
from switchyard.pricing import rates

# report column -> the pricing.rates() token class it is priced as
PRICED = {
    "input_tokens": "input_tokens",
    "cache_read_tokens": "cached_input_tokens",
    "cache_write_5m_tokens": "cache_write_tokens",
    "cache_write_1h_tokens": "cache_write_1h_tokens",
    "output_tokens": "output_tokens",
}


@dataclass(frozen=True)
class Baseline:
    provider: str
    model: str
    version: str  # claude/claude-opus-4-5@2025-11-24
    rates: dict[str, Decimal]  # report column -> USD per million tokens (= micro-dollars per token)

    def micros(self, sums: dict[str, int]) -> Decimal:
        """The exact baseline cost of these token sums, in micro-dollars (not rounded)."""
        return sum((Decimal(sums[column]) * rate for column, rate in self.rates.items()), start=Decimal(0))

    @property
    def how(self) -> str:
        r = {k: f"${v.normalize():f}" for k, v in self.rates.items()}
        return (
            f"Baseline: every attempt's real usage repriced at {self.version} (per million tokens: input "
            f"{r['input_tokens']}, cache read {r['cache_read_tokens']}, cache write 5m {r['cache_write_5m_tokens']} "
            f"/ 1h {r['cache_write_1h_tokens']}, output incl. reasoning {r['output_tokens']}); Ollama's tokens too."
        )


def resolve(fleet: Fleet, spec: str | None, day: date) -> Baseline:
    """The baseline ``PROVIDER[:MODEL]`` (the fleet file's ``[reports] baseline`` when None) priced on ``day``."""
    text = fleet.reports.baseline if spec is None else spec.strip()
    try:
        provider, model = fleet.baseline_model(text)
    except ValueError as exc:
        raise InputError(f"--baseline: {exc}") from None
    try:
        version, price = fleet.price(provider, model, day)
    except ConfigError as exc:
        raise InputError(f"--baseline {text!r}: {exc}") from None
    per_class = rates(price)
    return Baseline(provider, model, version, {column: per_class[cls] for column, cls in PRICED.items()})
