"""Paired bootstrap of a metric difference on the held-out slice: is the gain more than noise?

A held-out slice of 20-50 queries lets a candidate beat the serving router by luck. The queries
are resampled with replacement; each resample scores *both* routers (paired, decisions fixed),
so the spread of ``candidate - serving`` over the resamples is the noise of the slice, not of
the routers. The resampling scheme is
:func:`router_models.evaluate_multi.bootstrap_aiq_difference`'s (``default_rng(seed)``, then
``integers(0, n, n)`` per resample), so the same seed draws the same rows.

A resample on which the difference is undefined (APGR when the strong model is not better on
it) counts as a loss for the candidate: undefined evidence is no evidence of a gain.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from router_models.evaluate import Truth, apgr, quality_curve

__all__ = ["Bound", "apgr_delta", "lower_bound", "paired_bootstrap", "resample_rows"]

IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Bound:
    """``point`` = the difference on the slice; ``lower`` = its one-sided lower confidence
    bound at ``confidence`` over ``n_resamples`` (NaN when not computed or undefined)."""

    point: float
    lower: float
    confidence: float
    n_resamples: int


def resample_rows(n: int, n_resamples: int, seed: int) -> Iterator[IntArray]:
    """``n_resamples`` draws of ``n`` row indices with replacement, seeded."""
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        yield np.asarray(rng.integers(0, n, n), dtype=np.intp)


def lower_bound(draws: npt.ArrayLike, confidence: float) -> float:
    """The ``1 - confidence`` quantile of ``draws`` (numpy's linear interpolation), with an
    undefined (NaN) draw counted as the smallest; NaN when the quantile falls on one."""
    raw = np.asarray(draws, dtype=np.float64)
    values = np.sort(np.where(np.isnan(raw), -np.inf, raw))
    if not values.size:
        return math.nan
    position = (1.0 - confidence) * (values.size - 1)
    below, above = values[math.floor(position)], values[math.ceil(position)]
    if not np.isfinite(below):
        return math.nan
    return float(below + (position - math.floor(position)) * (above - below))


def paired_bootstrap(
    statistic: Callable[[IntArray | None], float],
    n: int,
    *,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> Bound:
    """``statistic(None)`` on all ``n`` rows and the lower bound of ``statistic(rows)`` over
    the resamples (``n_resamples = 0``: no bound, ``lower`` is NaN)."""
    draws = [statistic(rows) for rows in resample_rows(n, n_resamples, seed)]
    lower = lower_bound(draws, confidence) if draws else math.nan
    return Bound(statistic(None), lower, confidence, n_resamples)


def apgr_delta(
    serving: FloatArray, candidate: FloatArray, truth: Truth, rows: IntArray | None = None
) -> float:
    """Candidate APGR - serving APGR in percentage points over ``rows`` (all by default);
    NaN when the strong model is not better on those rows."""
    index = np.arange(len(truth.query_ids)) if rows is None else rows
    weak, strong = truth.weak[index], truth.strong[index]
    gained = apgr(quality_curve(candidate[index], weak, strong))
    return 100.0 * (gained - apgr(quality_curve(serving[index], weak, strong)))
