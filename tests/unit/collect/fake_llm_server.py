"""A scripted OpenAI-compatible chat server on loopback, and prompt files, for collector tests.

It is a real HTTP server (uvicorn in a thread): the collector's retries, timeouts and
concurrency limits meet real sockets. Faults are consumed one per request; replies are
deterministic functions of the request (the seed picks the answer), so runs are repeatable.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from integration.upstream_server import ServerThread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from router_models.collect.rewrite import REWRITE_SYSTEM_PROMPT

__all__ = ["FakeLLM", "default_reply", "gsm8k_prompt", "write_prompts"]

Reply = Callable[[dict[str, Any]], str]

_REWRITE_PREFIXES = ("please answer this: ", "tell me: ", "here is a question: ", "so, ")


def default_reply(body: dict[str, Any]) -> str:
    """Rewrites get a harmless prefix, judges say 7, everything else 'The answer is seed % 3'."""
    messages = body["messages"]
    question = str(messages[-1]["content"])
    seed = int(body.get("seed") or 0)
    if question.startswith("Please act as an impartial judge"):
        return "Fine. Rating: [[7]]"
    if messages[0]["content"] == REWRITE_SYSTEM_PROMPT:
        return _REWRITE_PREFIXES[seed % len(_REWRITE_PREFIXES)] + question
    return f"Let me think. The answer is {seed % 3}."


@dataclass
class FakeLLM:
    """Scripted server state: ``faults`` ("429", "500", "400", "hang") go first, one each;
    then ``fault_for(body)`` may pick a fault for a given request."""

    reply: Reply = default_reply
    faults: list[str] = field(default_factory=list)
    fault_for: Callable[[dict[str, Any]], str | None] | None = None
    delay_s: float = 0.0
    hang_s: float = 3.0
    retry_after: str | None = None
    bodies: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    server: ServerThread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        if self.server is None:
            raise RuntimeError("not started")
        return f"{self.server.url}/v1"

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.bodies.append(body)
            self.authorizations.append(request.headers.get("authorization"))
            fault = self.faults.pop(0) if self.faults else None
            if fault is None and self.fault_for is not None:
                fault = self.fault_for(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if fault == "hang":
                await asyncio.sleep(self.hang_s)
            if fault in ("429", "500", "400"):
                headers = {"retry-after": self.retry_after} if self.retry_after else {}
                error = {"error": {"message": f"planted {fault}", "type": "test", "code": fault}}
                return JSONResponse(error, status_code=int(fault), headers=headers)
            text = self.reply(body)
            prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
            return JSONResponse(
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": len(text.split()),
                        "total_tokens": prompt_tokens + len(text.split()),
                    },
                }
            )
        finally:
            with self._lock:
                self.in_flight -= 1

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])


def write_prompts(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A prompt file in the shared-data format (gzip when the name ends in .gz)."""
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def gsm8k_prompt(i: int, answer: int) -> dict[str, Any]:
    return {
        "dataset": "gsm8k",
        "split": "test",
        "query_id": f"gsm8k-test-{i:05d}",
        "prompt": f"Ann has {i + 2} apples and gives away {i} apples. How many are left?",
        "variant_id": 0,
        "variant": None,
        "sample_id": 0,
        "model": None,
        "score": None,
        "response": None,
        "cost": None,
        "meta": {"answer": str(answer), "solution": "long worked solution #### " + str(answer)},
    }
