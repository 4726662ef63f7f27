"""A real fake OpenAI upstream on loopback, and a helper that runs any ASGI app under uvicorn.

The fake answers ``POST /v1/chat/completions`` (JSON and SSE) like an OpenAI-compatible server,
records every request it receives, and fails on demand: 500, 429, hang (timeouts), a stream that
drops mid-way, or a slow stream to observe client disconnects; stopped, its port refuses
connections.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
import openai
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from app.main import create_app
from app.settings import Settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "CLOUD_KEY",
    "CLOUD_MODEL",
    "COMPLETION_TOKENS",
    "EDGE_KEY",
    "EDGE_MODEL",
    "PROMPT_TOKENS",
    "FakeUpstream",
    "Fault",
    "RecordedRequest",
    "ServerThread",
    "fake_upstreams",
    "router_settings",
    "running_router",
    "stream_chat",
    "upstreams_yaml",
]

Fault = Literal["400", "500", "429", "hang", "drop", "bad_json"]
EDGE_MODEL, CLOUD_MODEL = "edge-model", "cloud-model"
EDGE_KEY, CLOUD_KEY = "sk-edge-upstream-secret", "sk-cloud-upstream-secret"
PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7


class ServerThread:
    """Run an ASGI app with uvicorn on a free loopback port in a daemon thread."""

    def __init__(
        self, app: ASGIApp, *, lifespan: Literal["on", "off"] = "off", port: int = 0
    ) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            lifespan=lifespan,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


@dataclass
class RecordedRequest:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeUpstream:
    """An OpenAI-compatible chat server named ``name``; set ``faults`` to make it fail.

    ``faults`` is consumed one per request (``fail(fault, times)``); ``always`` fails every
    request. ``stream_chunks``/``chunk_delay_s`` shape the SSE answer. ``stop()`` then
    ``start()`` keeps the port: in between, connections are refused (upstream down).
    ``answers``, when set, are answered by seed (``answers[seed % len]``; with ``n``, choice
    ``i`` gets seed + i), like a sampling LLM whose answers differ between seeds.
    """

    name: str
    hang_s: float = 5.0
    stream_chunks: int = 3
    chunk_delay_s: float = 0.0
    always: Fault | None = None
    faults: list[Fault] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    streams_completed: int = 0
    streams_cancelled: int = 0
    _server: ServerThread | None = None
    _port: int = 0

    # --- control

    def fail(self, fault: Fault, times: int = 1) -> None:
        self.faults.extend([fault] * times)

    def reset(self) -> None:
        self.always = None
        self.faults.clear()
        self.requests.clear()
        self.answers.clear()
        self.streams_completed = self.streams_cancelled = 0
        self.stream_chunks, self.chunk_delay_s = 3, 0.0

    @property
    def base_url(self) -> str:
        if not self._port:
            raise RuntimeError("not started")
        return f"http://127.0.0.1:{self._port}/v1"

    def start(self) -> FakeUpstream:
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        self._server = ServerThread(app, port=self._port).start()
        self._port = self._server.port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    # --- protocol

    def answer_text(self, seed: int | None = None) -> str:
        if self.answers:
            return self.answers[(seed or 0) % len(self.answers)]
        return f"Hello from {self.name}."

    def _next_fault(self) -> Fault | None:
        return self.faults.pop(0) if self.faults else self.always

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(RecordedRequest(dict(request.headers), body))
        fault = self._next_fault()
        if fault == "400":
            message = "This model's maximum context length is 8 tokens."
            return JSONResponse({"error": {"message": message, "type": "invalid_request"}}, 400)
        if fault == "500":
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, 500)
        if fault == "429":
            return JSONResponse({"error": {"message": "slow down", "type": "rate_limit"}}, 429)
        if fault == "hang":
            await asyncio.sleep(self.hang_s)
        if fault == "bad_json":
            return Response(b"not json", media_type="application/json")
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = self._events(
                body["model"], usage=usage, drop=fault == "drop", seed=body.get("seed")
            )
            return StreamingResponse(events, media_type="text/event-stream")
        return JSONResponse(self._completion(body["model"], body.get("seed"), body.get("n") or 1))

    def _usage(self) -> dict[str, int]:
        total = PROMPT_TOKENS + COMPLETION_TOKENS
        return {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": total,
        }

    def _completion(self, model: str, seed: int | None = None, n: int = 1) -> dict[str, Any]:
        first = seed or 0
        return {
            "id": f"chatcmpl-{self.name}",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": self.answer_text(first + i)},
                    "finish_reason": "stop",
                }
                for i in range(n)
            ],
            "usage": self._usage(),
        }

    def _chunk(self, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{self.name}",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    async def _events(
        self, model: str, *, usage: bool, drop: bool, seed: int | None = None
    ) -> AsyncIterator[bytes]:
        words = self.answer_text(seed).split(" ")
        pieces = [words[0]] + [" " + word for word in words[1:]]
        pieces += ["."] * max(0, self.stream_chunks - len(pieces))
        chunks = [self._chunk(model, {"role": "assistant", "content": ""}, None)]
        chunks += [self._chunk(model, {"content": piece}, None) for piece in pieces]
        chunks.append(self._chunk(model, {}, "stop"))
        if usage:
            for chunk in chunks:
                chunk["usage"] = None
            final = self._chunk(model, {}, None)
            final["choices"], final["usage"] = [], self._usage()
            chunks.append(final)
        try:
            for number, chunk in enumerate(chunks):
                if drop and number == 2:
                    raise ConnectionAbortedError("fake upstream drops the stream")
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
            yield b"data: [DONE]\n\n"
            self.streams_completed += 1
        except (asyncio.CancelledError, GeneratorExit):
            self.streams_cancelled += 1
            raise


@contextmanager
def fake_upstreams(names: Iterable[str]) -> Iterator[dict[str, FakeUpstream]]:
    """One started fake upstream per name (the name is its upstream name), stopped after."""
    started = {name: FakeUpstream(name).start() for name in names}
    try:
        yield started
    finally:
        for fake in started.values():
            fake.stop()


def upstreams_yaml(
    fakes: Mapping[str, FakeUpstream],
    fields: Mapping[str, Mapping[str, object]] | None = None,
    tail: str = "",
) -> str:
    """An upstreams file: each fake by name, model ``<name>-model``, its extra ``fields``
    (by name), then ``tail`` (top-level keys, e.g. ``failover``)."""
    lines = ["upstreams:"]
    for name, fake in fakes.items():
        lines += [f"  - name: {name}", f"    base_url: {fake.base_url}", f"    model: {name}-model"]
        lines += [f"    {key}: {value}" for key, value in (fields or {}).get(name, {}).items()]
    return "\n".join(lines) + "\n" + tail


def stream_chat(client: openai.OpenAI, **body: Any) -> tuple[httpx.Headers, str, list[Any]]:
    """A streamed chat completion through the SDK: response headers, the text, the usages."""
    with client.chat.completions.with_streaming_response.create(stream=True, **body) as raw:
        headers = raw.headers
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return headers, text, [c.usage for c in chunks if c.usage is not None]


# --- the router service under test


def router_settings(
    router_model: Path, edge: FakeUpstream, cloud: FakeUpstream, **overrides: Any
) -> Settings:
    """Settings for a router in front of two fake upstreams: CPU, one thread, no backoff."""
    values: dict[str, Any] = {
        "router_model": router_model,
        "edge_base_url": edge.base_url,
        "edge_model": EDGE_MODEL,
        "edge_api_key": EDGE_KEY,
        "edge_price_input_per_mtok": 0.1,
        "edge_price_output_per_mtok": 0.2,
        "cloud_base_url": cloud.base_url,
        "cloud_model": CLOUD_MODEL,
        "cloud_api_key": CLOUD_KEY,
        "cloud_price_input_per_mtok": 2.5,
        "cloud_price_output_per_mtok": 10.0,
        "onnx_providers": "cpu",
        "onnx_threads": 1,
        "upstream_backoff_s": 0.0,
        "upstream_retries": 1,
        "upstream_read_timeout_s": 2.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextmanager
def running_router(settings: Settings, encoder: SentenceTransformer) -> Iterator[ServerThread]:
    """The real app (lifespan included) under uvicorn on a loopback port."""
    server = ServerThread(create_app(settings, encoder=encoder), lifespan="on").start()
    try:
        yield server
    finally:
        server.stop()


def serve_standalone(port: int) -> None:
    """Serve one healthy fake upstream on ``port`` until killed (benchmarks run it this way)."""
    FakeUpstream("edge", _port=port).start()
    threading.Event().wait()


if __name__ == "__main__":
    import sys

    serve_standalone(int(sys.argv[1]))
