"""Pricing: integer micro-dollars, exact decimal arithmetic, one half-up rounding, reasoning billed once."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchyard.fleet import Price
from switchyard.pricing import cost_micros, micros_to_usd, rates
from switchyard.usage import Usage

DAY = date(2026, 1, 1)
SONNET_4_5 = Price(effective=DAY, input=3.0, output=15.0, cache_read=0.30, cache_write_5m=3.75, cache_write_1h=6.0)
OPUS_4_5 = Price(effective=DAY, input=5.0, output=25.0, cache_read=0.50)
HAIKU_4_5 = Price(effective=DAY, input=1.0, output=5.0, cache_read=0.10)
GPT_5_3_CODEX = Price(effective=DAY, input=1.75, output=14.0, cache_read=0.175)
FREE = Price(effective=DAY, input=0.0, output=0.0)
TOKEN_FIELDS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
)


def test_one_million_input_tokens_cost_the_list_price() -> None:
    assert cost_micros(Usage(input_tokens=1_000_000), HAIKU_4_5) == 1_000_000  # $1.00
    assert cost_micros(Usage(output_tokens=1_000_000), SONNET_4_5) == 15_000_000  # $15.00


def test_sonnet_every_token_class_by_hand() -> None:
    usage = Usage(
        input_tokens=1000,
        cached_input_tokens=2000,
        cache_write_tokens=500,
        cache_write_1h_tokens=100,
        output_tokens=400,
    )
    # 1000*3 + 2000*0.30 + 500*3.75 + 100*6 + 400*15 = 3000 + 600 + 1875 + 600 + 6000
    assert cost_micros(usage, SONNET_4_5) == 12_075
    assert micros_to_usd(12_075) == Decimal("0.012075")


def test_codex_cached_and_reasoning_by_hand() -> None:
    usage = Usage(input_tokens=10_000, cached_input_tokens=5_000, output_tokens=2_000, reasoning_tokens=500)
    # 10000*1.75 + 5000*0.175 + 2000*14 = 17500 + 875 + 28000; reasoning is inside the 2000 output tokens
    assert cost_micros(usage, GPT_5_3_CODEX) == 46_375


def test_reasoning_tokens_are_never_billed_twice() -> None:
    with_reasoning = Usage(output_tokens=1_000, reasoning_tokens=900)
    assert cost_micros(with_reasoning, GPT_5_3_CODEX) == cost_micros(Usage(output_tokens=1_000), GPT_5_3_CODEX)


def test_cache_writes_default_to_anthropic_multiples_of_input() -> None:
    assert rates(OPUS_4_5)["cache_write_tokens"] == Decimal("6.25")  # 1.25 x 5.00
    assert rates(OPUS_4_5)["cache_write_1h_tokens"] == Decimal("10.00")  # 2 x 5.00
    assert cost_micros(Usage(cache_write_tokens=1000, cache_write_1h_tokens=1000), OPUS_4_5) == 16_250


def test_explicit_cache_write_prices_win_over_the_defaults() -> None:
    price = Price(effective=DAY, input=2.0, output=8.0, cache_write_5m=9.0, cache_write_1h=11.0)
    assert cost_micros(Usage(cache_write_tokens=10, cache_write_1h_tokens=10), price) == 200


@pytest.mark.parametrize(
    ("cached", "expected"),
    [(1, 0), (2, 0), (3, 1), (20, 4), (1_000_001, 175_000)],  # 0.175, 0.35, 0.525, 3.5, 175000.175 micros
)
def test_rounds_half_up_once_at_the_end(cached: int, expected: int) -> None:
    assert cost_micros(Usage(cached_input_tokens=cached), GPT_5_3_CODEX) == expected


def test_exact_half_rounds_up_and_fractions_are_summed_before_rounding() -> None:
    assert cost_micros(Usage(cached_input_tokens=1), OPUS_4_5) == 1  # 0.5 -> 1
    price = Price(effective=DAY, input=0.3, output=0.3, cache_read=0.3)
    # 0.3 + 0.3 = 0.6 -> 1; rounding each class on its own would give 0 + 0
    assert cost_micros(Usage(input_tokens=1, cached_input_tokens=1), price) == 1
    assert cost_micros(Usage(input_tokens=1), price) == 0


def test_decimal_prices_are_read_as_written_not_as_binary_floats() -> None:
    price = Price(effective=DAY, input=0.1, output=0.2)
    assert cost_micros(Usage(input_tokens=10**9, output_tokens=10**9), price) == 300_000_000  # exactly $300


def test_negative_token_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="output_tokens is negative"):
        cost_micros(Usage(output_tokens=-1), SONNET_4_5)


def test_every_priced_usage_field_is_a_token_class() -> None:
    priced = set(rates(SONNET_4_5))
    assert priced == set(TOKEN_FIELDS)
    assert priced | {"reasoning_tokens", "compute_seconds"} == {f.name for f in fields(Usage)}


counts = st.integers(min_value=0, max_value=10**10)
prices = st.floats(min_value=0, max_value=1000, allow_nan=False, allow_infinity=False)
usages = st.builds(
    Usage,
    input_tokens=counts,
    cached_input_tokens=counts,
    cache_write_tokens=counts,
    cache_write_1h_tokens=counts,
    output_tokens=counts,
    reasoning_tokens=counts,
)
price_models = st.builds(
    Price,
    effective=st.just(DAY),
    input=prices,
    output=prices,
    cache_read=prices,
    cache_write_5m=st.none() | prices,
    cache_write_1h=st.none() | prices,
)


@given(usages, price_models, st.sampled_from(TOKEN_FIELDS), st.integers(min_value=0, max_value=10**9))
def test_cost_is_monotone_in_every_token_class(usage: Usage, price: Price, field: str, more: int) -> None:
    bigger = replace(usage, **{field: getattr(usage, field) + more})
    assert cost_micros(bigger, price) >= cost_micros(usage, price) >= 0


@given(price_models)
def test_zero_usage_costs_nothing(price: Price) -> None:
    assert cost_micros(Usage(), price) == 0


@given(usages)
def test_a_free_price_costs_nothing(usage: Usage) -> None:
    assert cost_micros(usage, FREE) == 0


@given(usages, price_models)
def test_cost_is_the_exact_sum_rounded_once(usage: Usage, price: Price) -> None:
    exact = sum((Decimal(getattr(usage, f)) * rate for f, rate in rates(price).items()), start=Decimal(0))
    assert abs(Decimal(cost_micros(usage, price)) - exact) <= Decimal("0.5")
