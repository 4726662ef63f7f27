"""One worker per process: refuse to start as one of several uvicorn workers.

Why not prometheus-client's multiprocess mode: each worker would load its own encoder and
router (hundreds of MB and seconds each), gauges such as ``dars_threshold`` and
``dars_cloud_share`` would need a per-worker aggregation rule, and the files in
``PROMETHEUS_MULTIPROC_DIR`` must be wiped at every start. Replicas (containers, pods) give the
same parallelism with per-process metrics that Prometheus sums, and a load balancer that
health-checks each one. ``dars-router serve`` passes uvicorn an app object, with which uvicorn
cannot fork workers; this guard catches ``uvicorn --factory app.main:create_app --workers N``
and ``WEB_CONCURRENCY=N`` (uvicorn's and gunicorn's default worker count).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Mapping, Sequence

__all__ = ["ONE_WORKER_MESSAGE", "requested_workers"]

ONE_WORKER_MESSAGE = (
    "DARS Router runs one worker per process (metrics, encoder and threshold are per process): "
    "drop --workers / WEB_CONCURRENCY and scale with replicas behind a load balancer "
    "(README, Deploy: Scaling out)."
)


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
