"""``python -m app.local_models_server`` with a real model: served name, and SIGTERM mid-request.

xllamacpp's own shutdown hangs while a request is in flight (until that client gives up), so
the server drains its slots, then exits: the request in flight must complete, and the process
must be gone soon after. SmolLM2-135M, a few seconds on two cores.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
from llm.servers import SERVED_NAME, start_model_server, stop

pytestmark = pytest.mark.llm


def _busy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/slots", timeout=5) as response:
        return any(slot["is_processing"] for slot in json.loads(response.read()))


def test_sigterm_lets_the_request_in_flight_finish(
    xllamacpp_installed: None, smollm2_file: Path, tmp_path: Path
) -> None:
    # A long drain: on a loaded 2-core machine 64 tokens took over 10 s, the default drain.
    server = start_model_server(
        smollm2_file, SERVED_NAME, tmp_path / "server.log", "--drain-s", "90"
    )
    result: dict[str, Any] = {}

    def ask() -> None:
        body = {
            "messages": [{"role": "user", "content": "Tell a long story about a cat."}],
            "max_tokens": 32,
            "ignore_eos": True,  # llama.cpp: exactly max_tokens, however the story goes
        }
        response = httpx.post(f"{server.url}/chat/completions", json=body, timeout=120)
        result["response"] = response

    try:
        asking = threading.Thread(target=ask)
        asking.start()
        deadline = time.monotonic() + 30
        while not _busy(server.port):
            assert time.monotonic() < deadline, "the request never reached a slot"
            time.sleep(0.05)

        server.process.send_signal(signal.SIGTERM)
        asking.join(timeout=120)
        exit_code = server.process.wait(timeout=30)
    finally:
        stop(server.process)

    response: httpx.Response = result["response"]
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == SERVED_NAME  # the alias, not the GGUF path
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 32
    assert exit_code == 0
    assert "[local_models_server] stopped" in (tmp_path / "server.log").read_text()
