"""Fixtures of the real-model tier: checked model files and SmolLM2 served by xllamacpp.

The helpers behind them (and the rules: fail in CI, skip elsewhere) are in ``llm/servers.py``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from llm.servers import SERVED_NAME, checked_model, missing, start_model_server, stop

__all__ = ["SERVED_NAME"]


@pytest.fixture(scope="session")
def xllamacpp_installed() -> None:
    if importlib.util.find_spec("xllamacpp") is None:
        missing("xllamacpp (the `local` extra) is not installed")


@pytest.fixture(scope="session")
def smollm2_file() -> Path:
    """The assembled, hash-checked SmolLM2-135M-Instruct GGUF (the edge model)."""
    return checked_model("EDGE")


@pytest.fixture(scope="session")
def qwen_file() -> Path:
    """The assembled, hash-checked Qwen2.5-Coder-0.5B-Instruct GGUF (the cloud stand-in)."""
    return checked_model("CLOUD")


@pytest.fixture(scope="session")
def smollm2_url(
    xllamacpp_installed: None, smollm2_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Base URL (``.../v1``) of SmolLM2 served by xllamacpp on a free loopback port."""
    log = tmp_path_factory.mktemp("llama") / "server.log"
    server = start_model_server(smollm2_file, SERVED_NAME, log)
    try:
        yield server.url
    finally:
        stop(server.process)
