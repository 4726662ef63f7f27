"""Per-worker metrics of ``dars-router serve --workers N``, read from its multiprocess files.

Each worker writes ``<kind>_<pid>.db`` into ``PROMETHEUS_MULTIPROC_DIR``; reading one file
alone says what that worker counted, so tests and the benchmark can tell workers apart
without the service exposing pids.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["Samples", "per_worker", "served", "total"]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(path: Path) -> Samples:
    found: Samples = {}
    for metric in MultiProcessCollector.merge([str(path)], accumulate=False):  # type: ignore[no-untyped-call]
        for sample in metric.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def per_worker(directory: Path, kind: str) -> dict[int, Samples]:
    """pid -> that worker's samples of one file kind (``counter``, ``gauge_livemostrecent``)."""
    return {
        int(path.stem.rsplit("_", 1)[1]): _samples(path) for path in directory.glob(f"{kind}_*.db")
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def served(directory: Path) -> dict[int, float]:
    """pid -> chat completion requests that worker answered."""
    counters = per_worker(directory, "counter")
    return {pid: total(samples, "dars_requests_total") for pid, samples in counters.items()}
