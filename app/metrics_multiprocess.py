"""Metrics that must read the same with one process or several workers (multiprocess mode).

prometheus-client's ``Info`` has no multiprocess mode, and a labelled series cannot be removed
from a worker's file, so "the one current series" needs its own small type.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, values

__all__ = ["InfoGauge", "multiprocess_dir"]


def multiprocess_dir() -> Path | None:
    """The multiprocess directory when prometheus-client writes values to files, else ``None``.

    The value class is chosen when prometheus-client is imported, so the variable set later
    does not count: the class decides.
    """
    if values.ValueClass is values.MutexValue:
        return None
    return Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR", ""))


class InfoGauge:
    """``name{labels} 1`` for one current series, like prometheus-client's ``Info``
    (``<name>_info``: pass the full name), as a gauge that works in
    multiprocess mode too (the largest value per series across workers)."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self._gauge = Gauge(
            name, documentation, labels, registry=registry, multiprocess_mode="livemax"
        )
        self._current: dict[str, str] | None = None

    def info(self, labels: Mapping[str, str]) -> None:
        """Export ``labels`` as the one current series. In multiprocess mode a series cannot
        be removed from the worker's file, so the replaced one reads 0 instead."""
        if multiprocess_dir() is None:
            self._gauge.clear()
        elif self._current is not None:
            self._gauge.labels(**self._current).set(0)
        self._gauge.labels(**labels).set(1)
        self._current = dict(labels)
