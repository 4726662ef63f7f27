"""Latency the router adds, and its throughput, versus calling the upstream directly.

A fake OpenAI upstream and the router (``dars-router serve``, in front of it) run as two
processes of their own on loopback, so the load generator here competes with neither. For
concurrency 1, 16 and 64 the same number of chat requests goes (a) straight to the upstream
and (b) through the router, once with a repeated query (embedding cache hit) and once with
unique queries (miss: the encoder runs).
Prints a markdown table of p50/p95/p99 added latency (router minus direct, per percentile) and
requests per second. Loopback only; request counts are bounded.

Run from the repository root::

    python -m bench.overhead [--requests 200] [--router path/to/router.onnx]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import numpy as np

from tests.helpers.onnx_routers import make_linear_router, random_unit_vectors

__all__ = ["main"]

CONCURRENCY = (1, 16, 64)
MAX_REQUESTS = 5000
READY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Run:
    """Per-request latencies (seconds) and the wall time of one batch of requests."""

    latencies: np.ndarray
    wall_s: float

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q))

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall_s


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _load(url: str, *, requests: int, concurrency: int, unique: bool) -> Run:
    """Send ``requests`` chat requests with ``concurrency`` workers; time each one.

    Each worker first sends one untimed request, so connection set-up is not measured.
    ``unique`` texts carry a fresh run id, so they miss the router's embedding cache even
    after earlier runs.
    """
    counter = itertools.count()
    run_id = uuid.uuid4().hex[:8]
    latencies: list[float] = []
    # aiohttp, not httpx, as the load generator: httpx's pool is the bottleneck at 64
    # concurrent requests (encode/httpx#3215) and would hide the router's own cost.
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def send(text: str) -> float:
            body = {"model": "router", "messages": [{"role": "user", "content": text}]}
            started = time.perf_counter()
            async with client.post(url, json=body) as response:
                await response.read()
                response.raise_for_status()
            return time.perf_counter() - started

        async def worker() -> None:
            while (number := next(counter)) < requests:
                text = f"[{run_id}-{number}] How do tides work?" if unique else "How do tides work?"
                latencies.append(await send(text))

        await asyncio.gather(*(send("How do tides work?") for _ in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return Run(np.asarray(latencies), wall)


@contextmanager
def _serving(command: list[str], env: dict[str, str], ready_url: str) -> Iterator[None]:
    """Run ``command`` as a subprocess until ``ready_url`` answers 200; stop it afterwards."""
    process = subprocess.Popen(command, env=env)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with code {process.returncode}")
            try:
                if httpx.get(ready_url, timeout=1.0, trust_env=False).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command} did not become ready")
            time.sleep(0.2)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def _upstream_process() -> Iterator[str]:
    """The fake OpenAI upstream in its own process; yields its base URL."""
    port = _free_port()
    command = [sys.executable, "-m", "tests.integration.upstream_server", str(port)]
    base_url = f"http://127.0.0.1:{port}/v1"
    with _serving(command, dict(os.environ), f"{base_url}/chat/completions"):
        yield base_url


@contextmanager
def _router_process(router: Path, upstream_url: str, threads: int | None) -> Iterator[str]:
    """``dars-router serve`` in a subprocess in front of ``upstream_url``; yields its base URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DARS_")}
    env.update(
        DARS_PORT=str(port),
        DARS_LOG_LEVEL="warning",
        DARS_ROUTER_MODEL=str(router),
        DARS_EDGE_BASE_URL=upstream_url,
        DARS_CLOUD_BASE_URL=upstream_url,
        DARS_THRESHOLD="1.0",  # everything to the edge: one upstream is enough here
        HF_HUB_OFFLINE="1",
    )
    if threads is not None:
        env.update(DARS_TORCH_THREADS=str(threads), DARS_ONNX_THREADS=str(threads))
    url = f"http://127.0.0.1:{port}"
    with _serving([sys.executable, "-m", "app.cli", "serve"], env, f"{url}/readyz"):
        yield url


def _row(concurrency: int, cache: str, direct: Run, proxied: Run) -> str:
    added = [1000 * (proxied.percentile(q) - direct.percentile(q)) for q in (50, 95, 99)]
    cells = [
        str(concurrency),
        cache,
        f"{1000 * direct.percentile(50):.2f}",
        f"{1000 * proxied.percentile(50):.2f}",
        *(f"{value:+.2f}" for value in added),
        f"{direct.rps:.0f}",
        f"{proxied.rps:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


async def _bench(router_url: str, upstream_url: str, requests: int) -> list[str]:
    direct_url = f"{upstream_url}/chat/completions"
    proxy_url = f"{router_url}/v1/chat/completions"
    await _load(proxy_url, requests=min(requests, 50), concurrency=4, unique=False)  # warm up
    rows = []
    for concurrency in CONCURRENCY:
        count = max(requests, concurrency)
        direct = await _load(direct_url, requests=count, concurrency=concurrency, unique=False)
        for cache, unique in (("hit", False), ("miss", True)):
            proxied = await _load(proxy_url, requests=count, concurrency=concurrency, unique=unique)
            rows.append(_row(concurrency, cache, direct, proxied))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per cell")
    parser.add_argument("--router", type=Path, help="router .onnx (default: a tiny linear one)")
    parser.add_argument("--threads", type=int, help="torch/onnxruntime threads of the router")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be within [1, {MAX_REQUESTS}]")

    with tempfile.TemporaryDirectory() as folder, _upstream_process() as upstream_url:
        router = args.router or make_linear_router(
            Path(folder) / "router.onnx", weights=random_unit_vectors(1)[0], bias=0.0
        )
        with _router_process(router, upstream_url, args.threads) as router_url:
            rows = asyncio.run(_bench(router_url, upstream_url, args.requests))
    print(f"Added latency of the router (ms) and throughput; {args.requests} requests per cell.\n")
    print(
        "| concurrency | embedding cache | direct p50 | routed p50 | added p50 | added p95 "
        "| added p99 | direct req/s | routed req/s |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
