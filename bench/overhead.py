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
import sys
import tempfile
from pathlib import Path

from bench._harness import Run, load, router_process, upstream_process
from tests.helpers.onnx_routers import make_linear_router, random_unit_vectors

__all__ = ["main"]

CONCURRENCY = (1, 16, 64)
MAX_REQUESTS = 5000


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
    await load(proxy_url, requests=min(requests, 50), concurrency=4, unique=False)  # warm up
    rows = []
    for concurrency in CONCURRENCY:
        count = max(requests, concurrency)
        direct = await load(direct_url, requests=count, concurrency=concurrency, unique=False)
        for cache, unique in (("hit", False), ("miss", True)):
            proxied = await load(proxy_url, requests=count, concurrency=concurrency, unique=unique)
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

    with tempfile.TemporaryDirectory() as folder, upstream_process() as upstream_url:
        router = args.router or make_linear_router(
            Path(folder) / "router.onnx", weights=random_unit_vectors(1)[0], bias=0.0
        )
        with router_process(router, upstream_url, args.threads) as server:
            rows = asyncio.run(_bench(server.url, upstream_url, args.requests))
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
