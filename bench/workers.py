"""Throughput of ``dars-router serve --workers N`` for N = 1, 2, 4, ... up to the core count.

One fake OpenAI upstream and one ``redis-server`` on loopback; for each N a router with N
workers (Redis for every N, so each row has the same cache) and the encoder threads and passes
``serve`` gives them by default (``--env DARS_X=VALUE`` overrides a setting). At each
concurrency it sends cache-miss requests (unique texts: the encoder runs)
and cache-hit requests (one repeated text), and reports requests/s, the speed-up over one
worker and the CPU per request of the router's whole process tree (``/proc``). Before
measuring, it sends requests until every worker has answered one (read from the workers'
metric files), so no row measures a worker still loading. The load generator runs in this
process, on the same cores: on a small machine it takes a share of them.

Prints a markdown report and writes it to ``bench/results/workers.md``. Run from the repository
root::

    python -m bench.workers [--requests 300] [--concurrency 16 64] [--max-workers N]
                            [--env DARS_EMBEDDING_PASSES=1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from app.encoders import default_passes, default_threads
from bench._cpu import tree_cpu_seconds
from bench._harness import Run, Server, load, router_process, upstream_process
from bench._local import cpu_line, load_average, write_report
from tests.helpers.onnx_routers import make_linear_router, random_unit_vectors
from tests.helpers.redis_server import RedisServer
from tests.helpers.worker_metrics import served

__all__ = ["main"]

OUT = Path(__file__).parent / "results" / "workers.md"
MAX_REQUESTS = 5000
SMOKE_BELOW = 300  # fewer requests per cell: a check that it runs, not a measurement
WARM_ROUNDS = 50


@dataclass(frozen=True)
class Cell:
    workers: int
    threads: str  # encoder threads per pass x passes, per worker
    concurrency: int
    cache: str
    run: Run


def worker_counts(cores: int, most: int) -> list[int]:
    """1, 2, 4, ... and the core count itself, up to ``most``."""
    counts = {1, min(cores, most)}
    n = 2
    while n <= min(cores, most):
        counts.add(n)
        n *= 2
    return sorted(counts)


async def _until_every_worker_served(url: str, metrics_dir: Path, workers: int) -> None:
    for _ in range(WARM_ROUNDS):
        if sum(count > 0 for count in served(metrics_dir).values()) >= workers:
            return
        await load(url, requests=32, concurrency=16, unique=True)
    raise RuntimeError(f"not every one of {workers} workers answered: {served(metrics_dir)}")


def encoder_threads(cores: int, workers: int, env: dict[str, str]) -> str:
    """``threads x passes`` of each worker's ONNX encoder on a CPU, as ``serve`` sets them:
    N > 1 workers get cores / N threads (``app.workers.thread_env``), one worker
    ``app.encoders.default_threads``; settings in ``env`` win."""
    passes = int(env.get("DARS_EMBEDDING_PASSES", default_passes("onnx", "cpu")))
    default = max(1, cores // workers) if workers > 1 else default_threads(cores, passes)
    threads = int(env.get("DARS_EMBEDDING_THREADS", default))
    return f"{threads}x{passes}"


async def _measure(
    server: Server, metrics_dir: Path, workers: int, threads: str, args: argparse.Namespace
) -> list[Cell]:
    url = f"{server.url}/v1/chat/completions"
    await _until_every_worker_served(url, metrics_dir, workers)
    cells = []
    for concurrency in args.concurrency:
        for cache, unique in (("miss", True), ("hit", False)):
            run = await load(
                url,
                requests=max(args.requests, concurrency),
                concurrency=concurrency,
                unique=unique,
                cpu_seconds=lambda: tree_cpu_seconds(server.process.pid),
            )
            cells.append(Cell(workers, threads, concurrency, cache, run))
    return cells


def _table(cells: list[Cell]) -> list[str]:
    one = {(c.concurrency, c.cache): c.run.rps for c in cells if c.workers == 1}
    lines = [
        "| workers | encoder threads x passes | concurrency | cache | req/s | speed-up vs 1 worker "
        "| CPU ms/request | p50 ms | p99 ms |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for c in sorted(cells, key=lambda c: (c.cache != "miss", c.concurrency, c.workers)):
        cpu = c.run.cpu_ms_per_request
        cells_text = [
            str(c.workers),
            c.threads,
            str(c.concurrency),
            c.cache,
            f"{c.run.rps:.0f}",
            f"{c.run.rps / one[(c.concurrency, c.cache)]:.2f}",
            "–" if cpu is None else f"{cpu:.2f}",
            f"{1000 * c.run.percentile(50):.1f}",
            f"{1000 * c.run.percentile(99):.1f}",
        ]
        lines.append("| " + " | ".join(cells_text) + " |")
    return lines


def _report(cells: list[Cell], args: argparse.Namespace, facts: dict[str, str]) -> str:
    smoke = args.requests < SMOKE_BELOW
    lines = [
        "# Workers per container: throughput against the worker count",
        "",
        "Generated by `bench/workers.py` (issue 10, several workers per container):",
        "",
        f"    {facts['command']}",
        "",
        f"- Date: {facts['date']}; wall time {facts['wall']}.",
        facts["cpu"],
        f"- {args.requests} requests per cell (at least the concurrency); fake OpenAI upstream "
        "and redis-server on loopback; the load generator (aiohttp) on the same cores.",
        "- Router: a linear ONNX router on the default encoder (ONNX Runtime, CPU); Redis "
        "embedding cache for every worker count; each worker's encoder threads and passes as "
        "`serve` sets them by default"
        + (f"; settings: {' '.join(args.env)}" if args.env else "")
        + ".",
    ]
    if smoke:
        lines.append(
            f"- **Smoke run** (fewer than {SMOKE_BELOW} requests per cell, on a machine shared "
            "with other jobs): it shows the benchmark works, not how throughput scales. Rerun "
            "on a quiet machine for numbers."
        )
    return "\n".join([*lines, "", *_table(cells), ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=SMOKE_BELOW, help="requests per cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--max-workers", type=int, help="largest worker count (default: cores)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the report goes")
    parser.add_argument(
        "--env", action="append", default=[], metavar="DARS_X=VALUE", help="router setting"
    )
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    if not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be within [1, {MAX_REQUESTS}]")
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        parser.error("redis-server is not installed (apt-get install redis-server)")
    cores = len(os.sched_getaffinity(0))
    counts = worker_counts(cores, args.max_workers or cores)

    load_before, started_at, started = load_average(), datetime.now(UTC), time.perf_counter()
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory() as folder, upstream_process() as upstream_url:
        work = Path(folder)
        router = make_linear_router(work / "router.onnx", weights=random_unit_vectors(1)[0])
        redis = RedisServer(redis_bin, work)
        redis.start()
        try:
            for workers in counts:
                redis.flush()
                threads = encoder_threads(cores, workers, env)
                metrics_dir = work / f"metrics-{workers}"
                extra = {
                    **env,
                    "DARS_WORKERS": str(workers),
                    "DARS_REDIS_URL": redis.url,
                    "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                }
                log = work / f"router-{workers}.log"
                with router_process(router, upstream_url, None, extra_env=extra, log=log) as s:
                    cells += asyncio.run(_measure(s, metrics_dir, workers, threads, args))
        finally:
            redis.stop()
    facts = {
        "command": " ".join(["python -m bench.workers", *(argv or sys.argv[1:])]),
        "date": started_at.strftime("%Y-%m-%d %H:%M UTC"),
        "wall": f"{(time.perf_counter() - started) / 60:.1f} min",
        "cpu": cpu_line(load_before, load_average()),
    }
    write_report(_report(cells, args, facts), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
