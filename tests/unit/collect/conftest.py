"""Fixtures of the collector's tests: a scripted loopback LLM server and prompt files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_llm_server import FakeLLM, gsm8k_prompt, write_prompts
from integration.upstream_server import ServerThread


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    fake = FakeLLM()
    fake.server = ServerThread(fake.app()).start()
    try:
        yield fake
    finally:
        fake.server.stop()


@pytest.fixture
def gsm8k_prompts(tmp_path: Path) -> Path:
    """Four GSM8K-style prompts; the fake's 'The answer is seed % 3' is right about 1/3."""
    return write_prompts(
        tmp_path / "prompts-gsm8k.jsonl.gz", [gsm8k_prompt(i, 2) for i in range(4)]
    )
