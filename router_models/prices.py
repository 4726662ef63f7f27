"""Prices of the models in the routing data, and each query's cost from them.

USD per 1M input and output tokens. None of the observation files carries a cost, so the
N-way evaluation prices calls with this table. Two kinds of entries, each labelled:

- **list**: the provider's published list price (OpenAI, Anthropic pricing pages, 2024, as
  recalled when this table was written; no network was available to re-check them).
- **assumed**: open-weights models have no single price. They are priced by size with one
  rule, ``0.10 + 0.011 * billions of parameters`` USD per 1M tokens (input = output), an
  assumption fitted by eye to serverless size tiers of 2024 (about 0.18 at 7-8B, 0.88 at
  70B). Parameter counts are the nominal ones in the model names. Treat these costs as
  relative, not as quotes.

Tokens: ``chars / 4`` (an assumption for English text). Input tokens come from the prompt;
output tokens from the response text where the data has it, else :data:`DEFAULT_OUTPUT_TOKENS`
per query (the same for every model, so only the price differs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_OUTPUT_TOKENS",
    "PRICES",
    "Price",
    "open_weights_price",
    "price_table_markdown",
    "query_costs",
]

FloatArray = npt.NDArray[np.float64]
CHARS_PER_TOKEN = 4.0
DEFAULT_OUTPUT_TOKENS = 256.0
_BASE_USD, _USD_PER_BILLION = 0.10, 0.011


@dataclass(frozen=True)
class Price:
    """USD per 1M input / output tokens and where the number comes from."""

    usd_in: float
    usd_out: float
    source: str


def open_weights_price(billions: float) -> Price:
    """The assumed size-based price of an open-weights model (see the module docstring)."""
    usd = round(_BASE_USD + _USD_PER_BILLION * billions, 4)
    return Price(usd, usd, f"assumed: {billions:g}B params")


_OPEN_WEIGHTS: dict[str, float] = {
    # llmrouter.jsonl.gz
    "codegemma-7b": 7,
    "gemma-2-9b-it": 9,
    "llama-3.1-8b-instruct": 8,
    "llama-3.1-nemotron-51b-instruct": 51,
    "llama-3.3-nemotron-super-49b-v1": 49,
    "llama3-chatqa-1.5-70b": 70,
    "llama3-chatqa-1.5-8b": 8,
    "mistral-7b-instruct-v0.3": 7,
    "qwen2.5-7b-instruct": 7,
    # routerdc-other.jsonl.gz, gsm8k-train-multi.jsonl.gz
    "mistral-7b-v0.1": 7,
    "metamath-mistral-7b": 7,
    "chinese-mistral-7b-v0.1": 7,
    "zephyr-7b-beta": 7,
    "dolphin-2.6-mistral-7b": 7,
    "meta-llama-3-8b": 8,
    "dolphin-2.9-llama3-8b": 8,
    # alpacaeval.jsonl.gz (open-weights subset)
    "fusechat-gemma-2-9b-instruct": 9,
    "fusechat-qwen-2.5-7b-instruct": 7,
    "fusechat-llama-3.1-8b-instruct": 8,
    "fusechat-llama-3.2-3b-instruct": 3,
    "fusechat-llama-3.2-1b-instruct": 1,
    "gemma-2b-it": 2,
    "gemma-7b-it": 7,
}

PRICES: dict[str, Price] = {
    **{name: open_weights_price(size) for name, size in _OPEN_WEIGHTS.items()},
    "gpt4_1106_preview": Price(10.0, 30.0, "list: OpenAI gpt-4-1106-preview"),
    "gpt-3.5-turbo-1106": Price(1.0, 2.0, "list: OpenAI gpt-3.5-turbo-1106"),
    "claude-2.1": Price(8.0, 24.0, "list: Anthropic claude-2.1"),
    "claude-2": Price(8.0, 24.0, "list: Anthropic claude-2"),
    "claude-instant-1.2": Price(0.8, 2.4, "list: Anthropic claude-instant-1.2"),
}


def query_costs(
    prompts: Sequence[str],
    response_chars: FloatArray,
    models: Sequence[str],
    prices: Mapping[str, Price] = PRICES,
) -> FloatArray:
    """USD per query and model, ``[n, K]``: prompt tokens in, response tokens out.

    ``response_chars`` ``[n, K]`` is NaN where a cell has no response text; those cells use
    :data:`DEFAULT_OUTPUT_TOKENS`.
    """
    missing = [m for m in models if m not in prices]
    if missing:
        raise ValueError(f"no price for model(s) {missing}; add them to router_models.prices")
    tokens_in = np.asarray([len(p) for p in prompts], dtype=np.float64) / CHARS_PER_TOKEN
    tokens_out = np.where(
        np.isnan(response_chars), DEFAULT_OUTPUT_TOKENS, response_chars / CHARS_PER_TOKEN
    )
    usd_in = np.asarray([prices[m].usd_in for m in models]) / 1e6
    usd_out = np.asarray([prices[m].usd_out for m in models]) / 1e6
    out: FloatArray = tokens_in[:, None] * usd_in[None, :] + tokens_out * usd_out[None, :]
    return out


def price_table_markdown(models: Sequence[str], prices: Mapping[str, Price] = PRICES) -> str:
    """The rows of ``models`` as a Markdown table (for reports)."""
    lines = ["| model | USD / 1M in | USD / 1M out | source |", "|---|---:|---:|---|"]
    for m in models:
        p = prices[m]
        lines.append(f"| {m} | {p.usd_in:.3f} | {p.usd_out:.3f} | {p.source} |")
    return "\n".join(lines)
