"""Several workers per container (app/workers.py) and metrics in multiprocess mode.

The multiprocess tests run the workers' side in real child processes: prometheus-client picks
its value class at import, and this test process imported it in single-process mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from app import local_models
from app.metrics_multiprocess import multiprocess_dir
from app.settings import Settings
from app.workers import (
    MULTIPROC_ENV,
    WorkerSetupError,
    check_workers,
    reap_dead_workers,
    requested_workers,
    settings_env,
    thread_env,
    worker_problem,
)
from app.workers import multiprocess_dir as metrics_dir

REDIS = "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("argv", "environ", "child", "expected"),
    [
        (["dars-router", "serve"], {}, False, 1),
        (["uvicorn", "app.main:create_app", "--factory"], {}, True, 1),
        (["uvicorn", "app.main:create_app", "--factory", "--workers", "4"], {}, True, 4),
        (["uvicorn", "app.main:create_app", "--workers=2"], {}, True, 2),
        (["uvicorn", "app.main:create_app", "--workers", "4"], {}, False, 1),  # the supervisor
        (["dars-router", "serve"], {"WEB_CONCURRENCY": "3"}, False, 3),
        (["dars-router", "serve"], {"WEB_CONCURRENCY": "junk"}, False, 1),
    ],
)
def test_requested_workers(
    argv: list[str], environ: dict[str, str], child: bool, expected: int
) -> None:
    assert requested_workers(argv, environ, child=child) == expected


def test_this_test_process_is_one_worker() -> None:
    assert requested_workers() == 1
    assert multiprocess_dir() is None  # single-process mode: a private registry per app


@pytest.mark.parametrize(
    ("workers", "redis", "directory", "names"),
    [
        (1, False, False, None),
        (2, False, True, "DARS_REDIS_URL"),
        (2, True, False, MULTIPROC_ENV),
        (4, True, True, None),
    ],
)
def test_worker_problem_names_the_missing_setting(
    workers: int, redis: bool, directory: bool, names: str | None
) -> None:
    problem = worker_problem(workers, redis=redis, multiproc_dir=directory)
    assert (problem is None) == (names is None)
    assert names is None or (problem is not None and names in problem)


def test_a_worker_of_plain_uvicorn_without_a_metrics_directory_refuses() -> None:
    settings = Settings(redis_url=REDIS)
    with pytest.raises(WorkerSetupError, match=MULTIPROC_ENV):
        check_workers(settings, {"WEB_CONCURRENCY": "2"})
    check_workers(settings, {"WEB_CONCURRENCY": "2", MULTIPROC_ENV: "/tmp/m"})
    with pytest.raises(WorkerSetupError, match="DARS_REDIS_URL"):
        check_workers(Settings(), {"WEB_CONCURRENCY": "2", MULTIPROC_ENV: "/tmp/m"})
    check_workers(Settings(workers=2), {})  # DARS_WORKERS is for `serve`'s parent to act on


def test_local_models_reach_the_workers_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    running = [
        local_models.RunningModel(model.role, model.name, tmp_path, 40000 + n, tmp_path, done)
        for n, model in enumerate(local_models.LOCAL_MODELS)
    ]
    configured = Settings(_env_file=None, cloud_price_input_per_mtok=7.0)
    started = local_models.settings_for(configured, running)
    env = settings_env(configured, started)

    assert "DARS_CLOUD_PRICE_INPUT_PER_MTOK" not in env  # what the operator set is kept
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DARS_CLOUD_PRICE_INPUT_PER_MTOK", "7.0")
    in_worker = Settings(_env_file=None)
    assert in_worker.model_dump() == started.model_dump()


def test_each_worker_gets_its_share_of_the_cores_unless_set() -> None:
    assert thread_env(Settings(), 2, cores=8) == {
        "DARS_EMBEDDING_THREADS": "4",
        "DARS_ONNX_THREADS": "4",
        "DARS_TORCH_THREADS": "4",
    }
    assert thread_env(Settings(embedding_threads=3), 16, cores=8) == {
        "DARS_ONNX_THREADS": "1",
        "DARS_TORCH_THREADS": "1",
    }


def test_the_directory_is_wiped_at_start_and_a_temporary_one_removed(tmp_path: Path) -> None:
    configured = tmp_path / "metrics"
    configured.mkdir()
    (configured / "counter_123.db").write_bytes(b"stale")
    (configured / "README").write_text("not ours")
    with metrics_dir(str(configured)) as directory:
        assert directory == configured
        assert sorted(p.name for p in directory.iterdir()) == ["README"]
    assert configured.is_dir()
    with metrics_dir(None) as temporary:
        assert temporary.is_dir() and not any(temporary.iterdir())
    assert not temporary.exists()


def test_dead_workers_live_gauges_are_reaped(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = os.getpid()
    names = [
        f"gauge_livesum_{gone.pid}.db",
        f"gauge_livemostrecent_{gone.pid}.db",
        f"counter_{gone.pid}.db",
        f"gauge_livesum_{me}.db",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")

    assert reap_dead_workers(tmp_path) == [gone.pid]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([f"counter_{gone.pid}.db", f"gauge_livesum_{me}.db"])


WORKER = textwrap.dedent(
    """
    import sys
    from prometheus_client import generate_latest
    from app.metrics import Metrics
    from app.metrics_multiprocess import multiprocess_dir
    assert multiprocess_dir() is not None
    metrics = Metrics()
    requests, threshold, router = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    metrics.requests.labels(route="edge", reason="threshold", status="200").inc(requests)
    metrics.threshold.set(threshold)
    metrics.live.queue_depth.set(requests)
    labels = dict(path="a.onnx", provider="cpu", embedding_model="m", label_scheme="dars",
                  router="mlp", default_threshold="0.5")
    metrics.router_info.info(labels)
    metrics.router_info.info({**labels, "path": router})
    metrics.live.set_router("old-sha", 1.0)
    metrics.live.set_router(router + "-sha", 2.0)  # a promotion
    sys.stdout.write(generate_latest(metrics.registry).decode())
    """
)


def _worker(directory: Path, *args: str) -> str:
    env = {**os.environ, MULTIPROC_ENV: str(directory)}
    result = subprocess.run(
        [sys.executable, "-c", WORKER, *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_workers_metrics_merge_into_one_exposition(tmp_path: Path) -> None:
    _worker(tmp_path, "2", "0.25", "c.onnx")
    second = _worker(tmp_path, "3", "0.75", "b.onnx")  # the later threshold
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    merged = generate_latest(registry).decode()

    for text in (second, merged):  # a worker's /metrics shows every worker's numbers
        edge = 'dars_requests_total{reason="threshold",route="edge",status="200"}'
        assert f"{edge} 5.0" in text
        assert 'dars_decisions_total{reason="forced",route="cloud"} 0.0' in text  # zero series
        assert "pid=" not in text  # every gauge names its merge rule
        assert "dars_build_info{version=" in text
    labels = dict(
        provider="cpu", embedding_model="m", label_scheme="dars", router="mlp",
        default_threshold="0.5",
    )  # fmt: skip
    info = "dars_router_model_info"
    assert registry.get_sample_value(info, {**labels, "path": "b.onnx"}) == 1.0
    version = "dars_live_router_version"
    assert registry.get_sample_value(version, {"sha256": "b.onnx-sha"}) == 1.0
    assert registry.get_sample_value(version, {"sha256": "old-sha"}) == 0.0  # replaced
    assert registry.get_sample_value(info, {**labels, "path": "c.onnx"}) == 1.0
    assert registry.get_sample_value(info, {**labels, "path": "a.onnx"}) == 0.0  # replaced
    assert registry.get_sample_value("dars_threshold") == 0.75  # the latest write
    assert registry.get_sample_value("dars_live_queue_depth") == 5.0  # livesum

    reap_dead_workers(tmp_path)  # both workers have exited: their live gauges go
    assert registry.get_sample_value("dars_live_queue_depth") is None
    assert registry.get_sample_value("dars_threshold") is None
    edge_labels = {"route": "edge", "reason": "threshold", "status": "200"}
    assert registry.get_sample_value("dars_requests_total", edge_labels) == 5.0  # counts stay
