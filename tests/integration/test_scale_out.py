"""Scale-out on loopback: three ``dars-router serve`` processes, one Redis, a real HAProxy.

A bounded load (``REQUESTS`` chat completions, ``CONCURRENCY`` in flight, paced over about
``REQUESTS / RATE`` seconds, hard-stopped after ``LOAD_BOUND_S``) goes through HAProxy while
replica 0 is killed (SIGKILL) and restarted and the threshold is changed with
``PUT /admin/threshold`` on replica 1. Checked: every request answered 200 (HAProxy retries what
a dying replica dropped), every replica reports the new threshold within a second of the PUT
(the restarted one from its first answer), and every request sent a second after the PUT was
routed with it (``x-dars-threshold``). The numbers are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers.binaries import require_binary
from helpers.haproxy import HAProxy
from helpers.onnx_routers import make_linear_router
from helpers.processes import free_port, log_tail, stop_process, wait_until
from helpers.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "admin-secret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
REPLICAS = 3
REQUESTS = 2000
CONCURRENCY = 64
RATE = 100.0  # requests/s offered: the load spans the kill, the restart and the change
LOAD_BOUND_S = 90.0
KILL_AT_S, CHANGE_AT_S = 3.0, 6.0
NEW_THRESHOLD = 0.05
TEXTS = [f"question {n}: how do {n} apples compare with {n * 3} pears?" for n in range(40)]


class Replica:
    """One ``dars-router serve`` subprocess on a fixed loopback port."""

    def __init__(self, index: int, env: dict[str, str], workdir: Path) -> None:
        self.index = index
        self.port = free_port()
        self.env = env
        self.workdir = workdir
        self.log = workdir / f"replica{index}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, env=self.env, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        try:
            wait_until(f"{self.url}/readyz", timeout_s=timeout_s, process=self.process)
        except RuntimeError as exc:
            raise RuntimeError(f"replica {self.index}: {exc}\n{log_tail(self.log)}") from exc

    def kill(self) -> None:
        if self.process is not None:
            stop_process(self.process, kill=True)


@dataclass
class Result:
    sent: float
    status: int
    latency_s: float
    server: str
    threshold: str


def _wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port}") from None
            time.sleep(0.05)


@pytest.fixture
def cluster(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[Replica], HAProxy]]:
    """Fake upstream, three replicas and HAProxy, all on loopback; everything stopped after."""
    haproxy_bin = require_binary("haproxy", "apt-get install haproxy")
    workdir = tmp_path_factory.mktemp("scale-out")
    redis_server.flush()
    weights = np.random.default_rng(3).normal(size=384).astype(np.float32)
    router = make_linear_router(workdir / "router.onnx", weights=weights, default_threshold=0.5)
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "integration.upstream_server", str(upstream_port)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{upstream_port}/v1"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DARS_")},
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "DARS_TORCH_THREADS": "1",
        "DARS_ONNX_THREADS": "1",
        "DARS_ONNX_PROVIDERS": "cpu",
        "DARS_EMBEDDING_DEVICE": "cpu",
        "DARS_LOG_LEVEL": "warning",
        "DARS_ROUTER_MODEL": str(router),
        "DARS_EDGE_BASE_URL": base_url,
        "DARS_CLOUD_BASE_URL": base_url,
        "DARS_EDGE_MODEL": "edge-model",
        "DARS_CLOUD_MODEL": "cloud-model",
        "DARS_REDIS_URL": redis_server.url,
        "DARS_ADMIN_TOKEN": TOKEN,
        "DARS_SHARED_REFRESH_S": "1",
        "DARS_UPSTREAM_BACKOFF_S": "0",
    }
    replicas = [Replica(index, env, workdir) for index in range(REPLICAS)]
    haproxy = HAProxy(haproxy_bin, workdir, free_port(), [r.port for r in replicas])
    try:
        _wait_port(upstream_port, timeout_s=30)
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_ready()
        haproxy.start()
        wait_until(f"{haproxy.url}/readyz", timeout_s=10)
        yield replicas, haproxy
    finally:
        haproxy.stop()
        for replica in replicas:
            replica.kill()
        stop_process(upstream)
        redis_server.flush()


async def _load(client: httpx.AsyncClient, started: float) -> list[Result]:
    """``REQUESTS`` requests offered at ``RATE``/s, at most ``CONCURRENCY`` at once."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(number: int) -> Result:
        await asyncio.sleep(max(0.0, started + number / RATE - time.monotonic()))
        async with gate:
            sent = time.monotonic()
            body = {
                "model": "router",
                "messages": [{"role": "user", "content": TEXTS[number % len(TEXTS)]}],
            }
            try:
                reply = await client.post("/v1/chat/completions", json=body)
            except httpx.HTTPError:
                return Result(sent - started, 0, time.monotonic() - sent, "-", "-")
            return Result(
                sent - started,
                reply.status_code,
                time.monotonic() - sent,
                reply.headers.get("x-lb-server", "-"),
                reply.headers.get("x-dars-threshold", "-"),
            )

    return await asyncio.gather(*(one(number) for number in range(REQUESTS)))


async def _threshold_of(client: httpx.AsyncClient, replica: Replica) -> float | None:
    try:
        reply = await client.get(f"{replica.url}/admin/threshold", headers=AUTH, timeout=2)
    except httpx.HTTPError:
        return None
    return float(reply.json()["value"]) if reply.status_code == 200 else None


async def _events(
    client: httpx.AsyncClient, replicas: list[Replica], started: float
) -> dict[str, float]:
    """Kill and restart replica 0, change the threshold on replica 1, time the propagation."""
    numbers: dict[str, float] = {}
    await asyncio.sleep(KILL_AT_S)
    replicas[0].kill()
    killed = time.monotonic()
    replicas[0].start()
    restart = asyncio.create_task(asyncio.to_thread(replicas[0].wait_ready))
    await asyncio.sleep(max(0.0, started + CHANGE_AT_S - time.monotonic()))
    put_sent = time.monotonic()
    reply = await client.put(
        f"{replicas[1].url}/admin/threshold", json={"value": NEW_THRESHOLD}, headers=AUTH
    )
    assert reply.status_code == 200, reply.text
    numbers["change_at_s"] = put_sent - started
    for replica in replicas[1:]:
        while await _threshold_of(client, replica) != NEW_THRESHOLD:
            assert time.monotonic() - put_sent < 5.0, f"replica {replica.index} never followed"
            await asyncio.sleep(0.01)
        numbers[f"replica{replica.index}_follows_ms"] = (time.monotonic() - put_sent) * 1000
    await restart
    numbers["restart_ready_s"] = time.monotonic() - killed
    numbers["restarted_threshold"] = await _threshold_of(client, replicas[0]) or -1.0
    return numbers


def test_three_replicas_behind_haproxy_lose_nothing(
    cluster: tuple[list[Replica], HAProxy],
) -> None:
    replicas, haproxy = cluster

    async def run() -> tuple[list[Result], dict[str, float], float]:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with (
            httpx.AsyncClient(base_url=haproxy.url, limits=limits, timeout=30) as lb,
            httpx.AsyncClient(timeout=5) as direct,
        ):
            started = time.monotonic()
            load, events = await asyncio.wait_for(
                asyncio.gather(_load(lb, started), _events(direct, replicas, started)),
                timeout=LOAD_BOUND_S,
            )
            return load, events, time.monotonic() - started

    results, numbers, elapsed = asyncio.run(run())

    statuses = Counter(result.status for result in results)
    latencies = np.array([result.latency_s for result in results]) * 1000
    servers = Counter(result.server for result in results)
    late = [r for r in results if r.sent > numbers["change_at_s"] + 1.0]
    stale = [r for r in late if r.threshold != f"{NEW_THRESHOLD:.6f}"]
    p50, p99 = np.percentile(latencies, [50, 99])
    print(
        f"\nscale-out: {len(results)} requests in {elapsed:.1f} s ({len(results) / elapsed:.0f}/s)"
        f", concurrency {CONCURRENCY}, statuses {dict(statuses)}, per replica {dict(servers)}"
        f"\nlatency ms p50 {p50:.1f} p99 {p99:.1f} max {latencies.max():.1f}; "
        + ", ".join(f"{k} {v:.3f}" for k, v in numbers.items())
        + f"\nrequests sent >1 s after the PUT: {len(late)}, with an old threshold: {len(stale)}"
    )
    assert statuses == {200: REQUESTS}, haproxy.log_tail()
    for replica in replicas[1:]:
        assert numbers[f"replica{replica.index}_follows_ms"] < 1000
    assert numbers["restarted_threshold"] == NEW_THRESHOLD
    assert late and not stale
    assert len(servers) == REPLICAS  # the balancer used every replica
