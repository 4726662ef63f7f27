"""The price table and per-query costs: tokens from responses where present."""

from __future__ import annotations

import numpy as np
import pytest

from router_models.prices import (
    DEFAULT_OUTPUT_TOKENS,
    PRICES,
    Price,
    open_weights_price,
    price_table_markdown,
    query_costs,
)


def test_costs_use_response_tokens_and_fall_back_to_the_default() -> None:
    prices = {"cheap": Price(1.0, 2.0, "test"), "dear": Price(10.0, 30.0, "test")}
    # Prompt of 400 chars = 100 tokens; dear's response of 800 chars = 200 tokens.
    chars = np.array([[np.nan, 800.0]])
    costs = query_costs(["x" * 400], chars, ["cheap", "dear"], prices)
    cheap = (100 * 1.0 + DEFAULT_OUTPUT_TOKENS * 2.0) / 1e6
    dear = (100 * 10.0 + 200 * 30.0) / 1e6
    np.testing.assert_allclose(costs, [[cheap, dear]])


def test_every_price_says_where_it_comes_from() -> None:
    assert all(p.source.startswith(("list:", "assumed:")) for p in PRICES.values())
    assert open_weights_price(70).usd_in == pytest.approx(0.87)
    assert "| gpt4_1106_preview | 10.000 | 30.000 |" in price_table_markdown(["gpt4_1106_preview"])


def test_unknown_model_is_named() -> None:
    with pytest.raises(ValueError, match="no price for model"):
        query_costs(["q"], np.array([[np.nan]]), ["mystery-model"])
