"""Several uvicorn workers per container: ``dars-router serve --workers N`` (``DARS_WORKERS``).

Each worker is a process of its own (encoder, router, event loop), so N workers use N cores
where one process is held to about one by the GIL. What must agree between them goes through
Redis, which N > 1 therefore requires: the embedding cache, and the threshold with its source
and the score window (``app/shared.py``), exactly as between replicas. Metrics use
prometheus-client's multiprocess mode: every worker writes its values into files in
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` merges them. prometheus-client picks its value
class when it is imported, so the directory is set in the environment before uvicorn spawns
the workers; it is wiped at start (stale files would add old counts), and since uvicorn has no
worker-exit hook, a thread in the parent removes the live-gauge files of workers that died
(``mark_process_dead``), so ``livesum`` gauges drop them.

A process started as one of several workers without ``dars-router serve``
(``uvicorn --factory app.main:create_app --workers N``, ``WEB_CONCURRENCY=N``) needs the same:
a multiprocess directory and Redis; without them it refuses to start (:func:`check_workers`).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from app.settings import Settings

__all__ = [
    "MULTIPROC_ENV",
    "WorkerSetupError",
    "check_workers",
    "multiprocess_dir",
    "reap_dead_workers",
    "requested_workers",
    "run_workers",
    "settings_env",
    "thread_env",
    "worker_problem",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")
_REAP_INTERVAL_S = 1.0


class WorkerSetupError(RuntimeError):
    """Several workers without what they need to agree (Redis, a metrics directory)."""


def requested_workers(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    child: bool | None = None,
) -> int:
    """The worker count this process was started with: ``WEB_CONCURRENCY``, or uvicorn's
    ``--workers`` as seen by a spawned worker (spawn hands children the parent's ``argv``)."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    child = multiprocessing.parent_process() is not None if child is None else child
    count = 1
    text = environ.get("WEB_CONCURRENCY", "").strip()
    if text.isdigit():
        count = max(count, int(text))
    if child:
        for index, arg in enumerate(argv):
            value = arg.partition("=")[2] if arg.startswith("--workers=") else None
            if arg == "--workers" and index + 1 < len(argv):
                value = argv[index + 1]
            if value is not None and value.strip().isdigit():
                count = max(count, int(value))
    return count


def worker_problem(workers: int, *, redis: bool, multiproc_dir: bool) -> str | None:
    """Why ``workers`` workers cannot serve correctly with this setup; ``None`` when they can."""
    if workers <= 1:
        return None
    if not redis:
        return (
            f"{workers} workers need DARS_REDIS_URL: they share the embedding cache, the "
            "threshold and the score window through Redis (README, Deploy: Scaling out). "
            "Set DARS_REDIS_URL, or serve with DARS_WORKERS=1."
        )
    if not multiproc_dir:
        return (
            f"this process is one of {workers} workers but {MULTIPROC_ENV} is not set, so "
            "/metrics would show one worker's numbers: start with `dars-router serve --workers "
            f"N` (it sets one up), or set {MULTIPROC_ENV} to an empty directory wiped at start."
        )
    return None


def check_workers(settings: Settings, environ: Mapping[str, str] | None = None) -> None:
    """Refuse to serve as one of several workers without Redis or a multiprocess directory.

    The count is this process's (uvicorn's ``--workers``, ``WEB_CONCURRENCY``), not
    ``DARS_WORKERS``: ``dars-router route`` and a single app read the same settings.
    """
    environ = os.environ if environ is None else environ
    workers = requested_workers(environ=environ)
    redis = settings.redis_url is not None
    problem = worker_problem(workers, redis=redis, multiproc_dir=bool(environ.get(MULTIPROC_ENV)))
    if problem is not None:
        raise WorkerSetupError(problem)


def settings_env(before: Settings, after: Settings) -> dict[str, str]:
    """``DARS_*`` variables that turn ``before`` into ``after`` in a worker that reads its
    settings from the environment (the local models' URLs and names)."""
    env: dict[str, str] = {}
    for name in type(after).model_fields:
        value = getattr(after, name)
        if value == getattr(before, name) or value is None:
            continue
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        env[f"DARS_{name.upper()}"] = text
    return env


def thread_env(settings: Settings, workers: int, cores: int | None = None) -> dict[str, str]:
    """Intra-op threads of each worker's encoder and router, cores / workers, for those the
    operator left unset: N workers each defaulting to all cores would oversubscribe them."""
    cores = len(os.sched_getaffinity(0)) if cores is None else cores
    threads = str(max(1, cores // workers))
    names = ("embedding_threads", "onnx_threads", "torch_threads")
    return {f"DARS_{name.upper()}": threads for name in names if getattr(settings, name) is None}


def reap_dead_workers(directory: Path) -> list[int]:
    """Remove the live-gauge files of processes that are gone; returns their pids."""
    from prometheus_client import multiprocess

    dead = []
    for path in directory.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(path.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid not in dead and not _alive(pid):
            multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
            dead.append(pid)
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process took the pid
        return False
    return True


@contextmanager
def multiprocess_dir(configured: str | None = None) -> Iterator[Path]:
    """A fresh metrics directory for the workers: ``configured`` (``PROMETHEUS_MULTIPROC_DIR``)
    with its ``*.db`` files removed, or a temporary one removed afterwards; dead workers' live
    gauges are reaped while it is in use."""
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="dars-metrics-"))
    stop = threading.Event()

    def reap() -> None:
        while not stop.wait(_REAP_INTERVAL_S):
            reap_dead_workers(directory)

    reaper = threading.Thread(target=reap, name="dars-metrics-reaper", daemon=True)
    reaper.start()
    try:
        yield directory
    finally:
        stop.set()
        reaper.join()
        if not configured:
            shutil.rmtree(directory, ignore_errors=True)


def run_workers(app: str, workers: int, **options: Any) -> None:
    """Serve the factory ``app`` with ``workers`` uvicorn workers until stopped.

    ``uvicorn.run`` would do the same, but when a worker fails to start (its lifespan raised:
    a bad router file, an unreadable upstreams file) uvicorn's supervisor stops every worker
    and returns normally, so the command would exit 0. Here it exits with uvicorn's own
    ``STARTUP_FAILURE`` code, as one worker does.
    """
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(app, factory=True, workers=workers, **options)
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
    if failed:
        print(
            f"dars-router: worker {failed[0]} failed to start; see its log above", file=sys.stderr
        )
        raise SystemExit(STARTUP_FAILURE)
