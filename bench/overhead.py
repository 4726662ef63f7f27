"""Latency the router adds, and its throughput, versus calling the upstream directly.

A fake OpenAI upstream runs on loopback (in this process); the router runs as a separate
process (``dars-router serve``) in front of it. For concurrency 1, 16 and 64 the same number of
chat requests goes (a) straight to the upstream and (b) through the router, once with a
repeated query (embedding cache hit) and once with unique queries (miss: the encoder runs).
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from tests.helpers.onnx_routers import make_linear_router, random_unit_vectors
from tests.integration.upstream_server import FakeUpstream

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
    """Send ``requests`` chat requests with ``concurrency`` workers; time each one."""
    counter = itertools.count()
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60.0, trust_env=False) as client:

        async def worker() -> None:
            while (number := next(counter)) < requests:
                text = f"Question {number}: how do tides work?" if unique else "How do tides work?"
                body = {"model": "router", "messages": [{"role": "user", "content": text}]}
                started = time.perf_counter()
                response = await client.post(url, json=body)
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return Run(np.asarray(latencies), wall)


@contextmanager
def _router_process(router: Path, upstream: FakeUpstream, threads: int | None) -> Iterator[str]:
    """``dars-router serve`` in a subprocess in front of ``upstream``; yields its base URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DARS_")}
    env.update(
        DARS_PORT=str(port),
        DARS_LOG_LEVEL="warning",
        DARS_ROUTER_MODEL=str(router),
        DARS_EDGE_BASE_URL=upstream.base_url,
        DARS_CLOUD_BASE_URL=upstream.base_url,
        DARS_THRESHOLD="1.0",  # everything to the edge: one upstream is enough here
        HF_HUB_OFFLINE="1",
    )
    if threads is not None:
        env.update(DARS_TORCH_THREADS=str(threads), DARS_ONNX_THREADS=str(threads))
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the router exited with code {process.returncode}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1.0, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the router did not become ready")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


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

    upstream = FakeUpstream("edge").start()
    with tempfile.TemporaryDirectory() as folder:
        router = args.router or make_linear_router(
            Path(folder) / "router.onnx", weights=random_unit_vectors(1)[0], bias=0.0
        )
        try:
            with _router_process(router, upstream, args.threads) as router_url:
                rows = asyncio.run(_bench(router_url, upstream.base_url, args.requests))
        finally:
            upstream.stop()
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
