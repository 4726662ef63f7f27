"""Real user prompts from the routing data sets beside the repository (``../shared/data``).

Used where a check must hold on real text (lengths, punctuation, unicode, code, prompts longer
than the encoder's 256 tokens), not on synthetic strings. Tests skip, saying why, when the data
folder is absent.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

__all__ = ["DATA_DIR", "real_prompts"]

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
# Varied sources: chat (mt-bench, alpacaeval), maths (gsm8k), a mix with long prompts.
_FILES = ("prompts-mtbench", "alpacaeval", "routellm-gsm8k", "llmrouter")


def real_prompts(count: int) -> list[str]:
    """``count`` distinct prompts, taken in turn from each file (deterministic order)."""
    per_file = -(-count // len(_FILES))
    pools: list[list[str]] = []
    for name in _FILES:
        path = DATA_DIR / f"{name}.jsonl.gz"
        if not path.is_file():
            pytest.skip(f"real prompts not found: {path} (the shared data folder)")
        pools.append(_distinct_prompts(path, per_file))
    mixed = [prompt for group in zip(*pools, strict=False) for prompt in group]
    return mixed[:count]


def _distinct_prompts(path: Path, count: int) -> list[str]:
    seen: dict[str, None] = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            seen.setdefault(json.loads(line)["prompt"], None)
            if len(seen) >= count:
                break
    return list(seen)
