"""``dars-router serve --workers 2`` as a real process: one Redis, a loopback upstream, the SDK.

Which worker answered is read from the workers' own metric files: in multiprocess mode each
worker writes ``<kind>_<pid>.db`` into ``PROMETHEUS_MULTIPROC_DIR``, so per-pid counters say who
served what, and per-pid gauges what each worker's threshold and router are. Checked: both
workers serve; ``/metrics`` sums every worker's requests; a threshold set on one worker reaches
the other, and so does a router reload; an embedding computed by one worker is a Redis hit on
the other; a killed worker is replaced, its
live gauges dropped and its counts kept; N > 1 without Redis is refused.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from helpers.onnx_routers import make_linear_router
from helpers.processes import free_port, log_tail, poll, stop_process, wait_until
from helpers.redis_server import RedisServer
from helpers.worker_metrics import per_worker, served, total
from prometheus_client.parser import text_string_to_metric_families

from router_models.live.reload import reload_service
from router_models.live.state import file_sha256

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "admin-secret"
WORKERS = 2
ROUNDS = 40  # bounded: rounds of concurrent requests until every worker has served
PROPAGATION_BOUND_S = 30.0  # a hang guard, not a latency claim


@dataclass(frozen=True)
class Service:
    url: str
    metrics_dir: Path
    log: Path


def _env(**extra: str) -> dict[str, str]:
    """The test process's environment without ``DARS_*``, with one thread per worker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DARS_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    threads = {f"DARS_{name}_THREADS": "1" for name in ("EMBEDDING", "ONNX", "TORCH")}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **threads, **extra}


@pytest.fixture(scope="module")
def service(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("workers")
    redis_server.flush()
    weights = np.random.default_rng(5).normal(size=384).astype(np.float32)
    router = make_linear_router(workdir / "router.onnx", weights=weights, default_threshold=0.5)
    upstream_port, port = free_port(), free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "integration.upstream_server", str(upstream_port)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{upstream_port}/v1"
    metrics_dir = workdir / "metrics"
    env = _env(
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        DARS_ONNX_PROVIDERS="cpu",
        DARS_EMBEDDING_DEVICE="cpu",
        DARS_LOG_LEVEL="warning",
        DARS_ROUTER_MODEL=str(router),
        DARS_EDGE_BASE_URL=base_url,
        DARS_CLOUD_BASE_URL=base_url,
        DARS_EDGE_MODEL="edge-model",
        DARS_CLOUD_MODEL="cloud-model",
        DARS_REDIS_URL=redis_server.url,
        DARS_ADMIN_TOKEN=TOKEN,
    )
    log = workdir / "serve.log"
    command = [sys.executable, "-m", "app.cli", "serve", "--workers", str(WORKERS)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)], env=env, cwd=workdir, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(f"{url}/readyz", timeout_s=180, process=process)
        yield Service(url, metrics_dir, log)
    finally:
        stop_process(process)
        stop_process(upstream)
        redis_server.flush()


# --- what each worker wrote (its own metric files)


def _cache(service: Service, result: str) -> dict[int, float]:
    counters = per_worker(service.metrics_dir, "counter")
    return {
        pid: total(samples, "dars_cache_requests_total", backend="redis", result=result)
        for pid, samples in counters.items()
    }


def _exported(service: Service, name: str) -> float:
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


# --- requests through the real SDK


async def _round(service: Service, texts: list[str]) -> None:
    """``texts`` at once, on fresh connections: the kernel hands them to either worker."""
    async with openai.AsyncOpenAI(
        base_url=f"{service.url}/v1", api_key="unused", max_retries=0
    ) as client:
        replies = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model="router", messages=[{"role": "user", "content": text}]
                )
                for text in texts
            )
        )
    assert all(reply.choices[0].message.content for reply in replies)


def test_both_workers_serve_and_metrics_sum_them(service: Service) -> None:
    before = sum(served(service.metrics_dir).values())
    sent = 0
    for number in range(ROUNDS):
        texts = [f"round {number} question {n}: what is {n} plus {number}?" for n in range(8)]
        asyncio.run(_round(service, texts))
        sent += len(texts)
        if sum(count > 0 for count in served(service.metrics_dir).values()) == WORKERS:
            break
    by_pid = served(service.metrics_dir)
    assert len(by_pid) == WORKERS, f"worker files: {by_pid}\n{log_tail(service.log)}"
    assert all(count > 0 for count in by_pid.values()), f"one worker served nothing: {by_pid}"
    assert sum(by_pid.values()) == before + sent
    assert _exported(service, "dars_requests_total") == before + sent
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    assert "pid=" not in text  # every gauge merges across workers: no per-pid series


def test_a_threshold_set_on_one_worker_reaches_the_other(service: Service) -> None:
    new = 0.123
    reply = httpx.put(
        f"{service.url}/admin/threshold",
        json={"value": new},
        headers={"authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text

    def thresholds() -> list[float]:
        gauges = per_worker(service.metrics_dir, "gauge_livemostrecent")
        return [total(samples, "dars_threshold") for samples in gauges.values()]

    followed = poll(lambda: thresholds() == [new] * WORKERS, timeout_s=PROPAGATION_BOUND_S)
    assert followed, f"per-worker thresholds {thresholds()}\n{log_tail(service.log)}"
    assert _exported(service, "dars_threshold") == new


def test_a_router_reload_on_one_worker_reaches_the_other(service: Service, tmp_path: Path) -> None:
    weights = np.random.default_rng(9).normal(size=384).astype(np.float32)
    promoted = make_linear_router(tmp_path / "promoted.onnx", weights=weights)
    sha = file_sha256(promoted)
    reload_service(service.url, TOKEN, promoted)  # reaches one worker, as the live loop's does

    def routers() -> list[float]:
        gauges = per_worker(service.metrics_dir, "gauge_livemax")
        return [
            total(samples, "dars_live_router_version", sha256=sha) for samples in gauges.values()
        ]

    followed = poll(lambda: routers() == [1.0] * WORKERS, timeout_s=PROPAGATION_BOUND_S)
    assert followed, f"per-worker router {routers()}\n{log_tail(service.log)}"


def test_an_embedding_cached_by_one_worker_is_a_hit_on_the_other(service: Service) -> None:
    text = f"cache probe {uuid.uuid4().hex}: why is the sky blue?"
    misses, hits = _cache(service, "miss"), _cache(service, "hit")
    asyncio.run(_round(service, [text]))
    first = [pid for pid, count in _cache(service, "miss").items() if count > misses[pid]]
    assert len(first) == 1, "exactly one worker embedded the text"
    other = next(pid for pid in misses if pid != first[0])
    for _ in range(ROUNDS):
        asyncio.run(_round(service, [text] * 4))
        if _cache(service, "hit")[other] > hits[other]:
            break
    assert _cache(service, "hit")[other] > hits[other], "the other worker never served the text"
    assert _cache(service, "miss")[other] == misses[other]  # it never embedded it itself
    assert sum(_cache(service, "miss").values()) == sum(misses.values()) + 1


def test_a_killed_worker_is_replaced_and_its_live_gauges_dropped(service: Service) -> None:
    """The last test on the service: it kills a worker (uvicorn starts another one)."""
    counted = _exported(service, "dars_requests_total")
    victim = min(served(service.metrics_dir))
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        live = per_worker(service.metrics_dir, "gauge_livemostrecent")
        return victim not in live and len(live) == WORKERS

    assert poll(replaced, timeout_s=180), (
        f"live gauge files: {sorted(service.metrics_dir.iterdir())}"
    )
    assert _exported(service, "dars_requests_total") == counted  # its counts stay in the sums
    asyncio.run(_round(service, ["still served after a worker died?"]))


def test_several_workers_without_redis_are_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--workers", "2"],
        env=_env(DARS_EDGE_BASE_URL="http://127.0.0.1:9/v1"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "DARS_REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_that_fails_to_start_fails_the_command(tmp_path: Path) -> None:
    # The parent only checks that the router file exists; loading it happens in each worker.
    broken = tmp_path / "router.onnx"
    broken.write_bytes(b"not an onnx file")
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--workers", "2"],
        env=_env(
            DARS_ROUTER_MODEL=str(broken),
            DARS_EDGE_BASE_URL="http://127.0.0.1:9/v1",
            DARS_CLOUD_BASE_URL="http://127.0.0.1:9/v1",
            DARS_REDIS_URL="redis://127.0.0.1:9/0",
            DARS_PORT="0",
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 3, result.stderr[-2000:]
    assert "failed to start" in result.stderr


@pytest.mark.parametrize("redis", [False, True])
def test_serve_runs_dars_workers_whatever_web_concurrency_says(
    tmp_path: Path, redis_server: RedisServer, redis: bool
) -> None:
    # A platform may set WEB_CONCURRENCY for every app (Heroku's Python buildpack does);
    # `serve` runs DARS_WORKERS workers (default 1), so one process must start and serve.
    router = make_linear_router(tmp_path / "router.onnx", default_threshold=0.5)
    port = free_port()
    env = _env(
        WEB_CONCURRENCY="2",
        DARS_ONNX_PROVIDERS="cpu",
        DARS_EMBEDDING_DEVICE="cpu",
        DARS_LOG_LEVEL="warning",
        DARS_ROUTER_MODEL=str(router),
        DARS_EDGE_BASE_URL="http://127.0.0.1:9/v1",
        DARS_CLOUD_BASE_URL="http://127.0.0.1:9/v1",
        DARS_EDGE_MODEL="edge-model",
        DARS_CLOUD_MODEL="cloud-model",
        **({"DARS_REDIS_URL": redis_server.url} if redis else {}),
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=out,
        )
    try:
        try:
            wait_until(f"http://127.0.0.1:{port}/readyz", timeout_s=180, process=process)
        except RuntimeError as exc:
            raise AssertionError(f"{exc}; log: {log_tail(log)}") from exc
    finally:
        stop_process(process)
