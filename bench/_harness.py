"""Shared pieces of the benchmarks: servers as subprocesses on loopback, and the load generator.

Every server (the fake upstream, the router, a peer proxy) runs as a process of its own, so the
load generator competes with none of them for the GIL, and each one's CPU time can be read from
``/proc`` (:mod:`bench._cpu`). Loopback only; request counts are bounded by the callers.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import numpy as np

__all__ = [
    "QUERY",
    "READY_TIMEOUT_S",
    "Run",
    "Server",
    "free_port",
    "load",
    "router_process",
    "serving",
    "stop",
    "unique_query",
    "upstream_process",
]

READY_TIMEOUT_S = 180.0
QUERY = "How do tides work?"


def unique_query(run_id: str, number: int) -> str:
    """A text that misses the embedding cache: what the load generator sends as a miss, and
    what the bare encoder times, so both encode texts of the same shape and token count."""
    return f"[{run_id}-{number}] {QUERY}"


@dataclass(frozen=True)
class Run:
    """Per-request latencies (seconds), the wall time of the batch and the server's CPU seconds.

    ``cpu_s`` is ``None`` when no server process was probed (the direct path).
    """

    latencies: np.ndarray
    wall_s: float
    cpu_s: float | None = None

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q))

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall_s

    @property
    def cpu_ms_per_request(self) -> float | None:
        return None if self.cpu_s is None else 1000 * self.cpu_s / len(self.latencies)


@dataclass(frozen=True)
class Server:
    """A running server: its base URL and process (whose CPU time the benchmarks read)."""

    url: str
    process: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def load(
    url: str,
    *,
    requests: int,
    concurrency: int,
    unique: bool,
    model: str = "router",
    headers: Mapping[str, str] | None = None,
    cpu_seconds: Callable[[], float] | None = None,
) -> Run:
    """Send ``requests`` chat requests with ``concurrency`` workers; time each one.

    Each worker first sends one untimed request, so connection set-up is not measured; nor is
    it in ``cpu_seconds`` (read after the warm-up and after the last response). ``unique``
    texts carry a fresh run id, so they miss the router's embedding cache even after earlier
    runs.
    """
    counter = itertools.count()
    run_id = uuid.uuid4().hex[:8]
    latencies: list[float] = []
    # aiohttp, not httpx, as the load generator: httpx's pool is the bottleneck at 64
    # concurrent requests (encode/httpx#3215) and would hide the router's own cost.
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120.0)
    session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers)
    async with session as client:

        async def send(text: str) -> float:
            body = {"model": model, "messages": [{"role": "user", "content": text}]}
            started = time.perf_counter()
            async with client.post(url, json=body) as response:
                await response.read()
                response.raise_for_status()
            return time.perf_counter() - started

        async def worker() -> None:
            while (number := next(counter)) < requests:
                text = unique_query(run_id, number) if unique else QUERY
                latencies.append(await send(text))

        await asyncio.gather(*(send(QUERY) for _ in range(concurrency)))
        cpu_before = cpu_seconds() if cpu_seconds is not None else None
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
        cpu = None
        if cpu_seconds is not None and cpu_before is not None:
            cpu = cpu_seconds() - cpu_before
    return Run(np.asarray(latencies), wall, cpu)


@contextmanager
def serving(
    command: list[str],
    env: Mapping[str, str],
    ready_url: str,
    *,
    log: Path | None = None,
    timeout_s: float = READY_TIMEOUT_S,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until ``ready_url`` answers below 500; stop it afterwards.

    Raises ``RuntimeError`` with the tail of ``log`` (its stdout and stderr) when the process
    exits or is not ready within ``timeout_s``.
    """
    output = log.open("wb") if log is not None else None
    process = subprocess.Popen(
        command, env=dict(env), stdout=output, stderr=subprocess.STDOUT if output else None
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"exited with code {process.returncode}{_tail(log)}")
            try:
                if httpx.get(ready_url, timeout=1.0, trust_env=False).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready within {timeout_s:.0f} s{_tail(log)}")
            time.sleep(0.2)
        yield process
    finally:
        stop(process)
        if output is not None:
            output.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s: a server that ignores the first still goes."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(log: Path | None, chars: int = 800) -> str:
    if log is None or not log.is_file():
        return ""
    text = log.read_text(errors="replace").strip()
    return f": ...{text[-chars:]}" if text else ""


@contextmanager
def upstream_process() -> Iterator[str]:
    """The fake OpenAI upstream in its own process; yields its base URL (``.../v1``)."""
    port = free_port()
    command = [sys.executable, "-m", "tests.integration.upstream_server", str(port)]
    base_url = f"http://127.0.0.1:{port}/v1"
    with serving(command, dict(os.environ), f"{base_url}/chat/completions"):
        yield base_url


@contextmanager
def router_process(
    router: Path,
    upstream_url: str,
    threads: int | None,
    *,
    extra_env: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[Server]:
    """``dars-router serve`` in a subprocess in front of ``upstream_url``."""
    port = free_port()
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
        env.update(
            DARS_TORCH_THREADS=str(threads),
            DARS_ONNX_THREADS=str(threads),
            DARS_EMBEDDING_THREADS=str(threads),
        )
    env.update(extra_env or {})
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "app.cli", "serve"]
    with serving(command, env, f"{url}/readyz", log=log) as process:
        yield Server(url, process)
