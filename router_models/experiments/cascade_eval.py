"""Scoring the cascade offline: per-query uncertainty, operating points, selection, hybrid.

The cascade is evaluated two ways on the same test queries:

- **as a ranker** (uncertainty = routing score) against the standard truth, each model's
  mean observed quality per query, so its CPT / APGR compare with every other router;
- **as deployed**: a kept query returns the self-consistency answer (the largest meaning
  class's first sample), whose score can differ from one edge call's, and every query
  pays the k edge samples.

Configurations (sample order, k, clustering, uncertainty measure) and the threshold are
chosen on the train split only: the cheapest deployed operating point whose train quality
reaches ``q_edge + level * (q_cloud - q_edge)`` (one edge call vs the cloud model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from router_models.cascade import (
    Estimator,
    PriceTable,
    Signal,
    cascade_cost,
    decide,
    escalates,
)
from router_models.evaluate import Curve, Truth, apgr, quality_curve
from router_models.experiments.cascade_samples import LabelTable

__all__ = [
    "MEASURES",
    "CascadeConfig",
    "OperatingPoint",
    "Selection",
    "Signals",
    "bootstrap_apgr_gap",
    "choose_point",
    "hybrid_scores",
    "operating_points",
    "point_at",
    "select_config",
    "share_to_reach",
    "signals",
]

FloatArray = npt.NDArray[np.float64]
MEASURES: tuple[str, ...] = ("entropy", "entropy-paper", "disagreement")


@dataclass(frozen=True, order=True)
class CascadeConfig:
    """One candidate cascade: how samples are drawn, how many, how grouped and measured."""

    order: str
    k: int
    clustering: str
    measure: str

    def describe(self) -> str:
        return f"k={self.k} {self.order}, {self.clustering} clusters, {self.measure}"


@dataclass(frozen=True)
class Signals:
    """Per query: the uncertainty, the self-consistency answer's score, samples used."""

    uncertainty: FloatArray
    keep_quality: FloatArray
    k_used: FloatArray


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold's outcome: cloud share, mean quality, mean cost per query."""

    threshold: float
    share: float
    quality: float
    cost: float


@dataclass(frozen=True)
class Selection:
    """The train split's choice and every candidate's train cost (for the report)."""

    config: CascadeConfig
    point: OperatingPoint
    target: float
    candidates: dict[str, float]


def signals(table: LabelTable, config: CascadeConfig, index: Sequence[int]) -> Signals:
    """The cascade's view of the queries at ``index`` under one configuration."""
    estimator: Estimator = "paper" if config.measure == "entropy-paper" else "discrete"
    signal: Signal = "disagreement" if config.measure == "disagreement" else "entropy"
    rows = table[(config.order, config.clustering)]
    out = np.empty((len(index), 3))
    for row, i in enumerate(index):
        samples, labels = rows[i]
        d = decide(labels[: config.k], math.inf, signal=signal, estimator=estimator)
        value = d.entropy if signal == "entropy" else d.disagreement
        out[row] = value, samples[d.representative].score, d.k
    return Signals(out[:, 0].copy(), out[:, 1].copy(), out[:, 2].copy())


def point_at(
    sig: Signals, strong: FloatArray, threshold: float, k: int, prices: PriceTable
) -> OperatingPoint:
    """Outcome of one threshold: escalated queries get the cloud's quality."""
    up = np.asarray([escalates(float(u), threshold) for u in sig.uncertainty], dtype=bool)
    share = float(up.mean())
    quality = float(np.where(up, strong, sig.keep_quality).mean())
    return OperatingPoint(threshold, share, quality, cascade_cost(k, share, prices))


def operating_points(
    sig: Signals, strong: FloatArray, k: int, prices: PriceTable
) -> list[OperatingPoint]:
    """Every distinct threshold, from escalating nothing to escalating everything."""
    values = sorted({float(u) for u in sig.uncertainty}, reverse=True)
    return [point_at(sig, strong, t, k, prices) for t in [*values, -1.0]]


def choose_point(points: Sequence[OperatingPoint], target: float) -> OperatingPoint:
    """The cheapest point whose quality reaches ``target`` (else the best-quality one)."""
    reaching = [p for p in points if p.quality >= target - 1e-12]
    if reaching:
        return min(reaching, key=lambda p: (p.cost, -p.quality))
    return max(points, key=lambda p: (p.quality, -p.cost))


def select_config(
    table: LabelTable,
    candidates: Sequence[CascadeConfig],
    train: Sequence[int],
    truth: Truth,
    prices: PriceTable,
    level: float,
) -> Selection:
    """The candidate whose train operating point reaches the level most cheaply; ties go to
    the better train ranking (APGR), then to fewer samples."""
    weak, strong = truth.weak, truth.strong
    target = float(weak.mean() + level * (strong.mean() - weak.mean()))
    scored = []
    costs: dict[str, float] = {}
    for config in candidates:
        sig = signals(table, config, train)
        point = choose_point(operating_points(sig, strong, config.k, prices), target)
        ranking = apgr(quality_curve(sig.uncertainty, weak, strong))
        costs[config.describe()] = point.cost
        scored.append((point.cost, -_finite(ranking), config.k, config, point))
    if not scored:
        raise ValueError("no cascade configuration fits these samples")
    best = min(scored, key=lambda s: s[:3])
    return Selection(config=best[3], point=best[4], target=target, candidates=costs)


def _finite(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def share_to_reach(curve: Curve, target: float) -> float:
    """Smallest cloud share whose quality reaches ``target``; NaN when none does."""
    reached = curve.quality >= target - 1e-12
    return float(curve.share[int(np.argmax(reached))]) if reached.any() else math.nan


def hybrid_scores(
    train_features: npt.ArrayLike,
    train_gain: npt.ArrayLike,
    test_features: npt.ArrayLike,
    *,
    seed: int = 0,
) -> tuple[FloatArray, FloatArray]:
    """A logistic regression of "the cloud is better" on standardised features, weighted by
    how much better (queries where both models are equal carry no information); returns
    the test scores and the standardised coefficients."""
    from sklearn.linear_model import LogisticRegression

    X = np.asarray(train_features, dtype=np.float64)
    gain = np.asarray(train_gain, dtype=np.float64)
    mean, std = X.mean(axis=0), X.std(axis=0)
    std[std == 0] = 1.0
    keep = gain != 0
    test = (np.asarray(test_features, dtype=np.float64) - mean) / std
    if len(np.unique(gain[keep] > 0)) < 2:
        # The cloud is never worse (or never better): no classes to separate, so rank by
        # the least-squares fit of the gain itself.
        design = np.column_stack([(X - mean) / std, np.ones(len(X))])
        coef = np.linalg.lstsq(design, gain, rcond=None)[0]
        return (test @ coef[:-1]).astype(np.float64), coef[:-1].astype(np.float64)
    model = LogisticRegression(C=1.0, random_state=seed, max_iter=1000)
    model.fit(
        (X[keep] - mean) / std, (gain[keep] > 0).astype(int), sample_weight=np.abs(gain[keep])
    )
    return model.decision_function(test).astype(np.float64), model.coef_[0].astype(np.float64)


def bootstrap_apgr_gap(
    first: FloatArray, second: FloatArray, truth: Truth, *, n: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Paired bootstrap over test queries of APGR(first) - APGR(second), in percent:
    (point estimate, 2.5 %, 97.5 %). Resamples where the cloud is not better are skipped."""
    rng = np.random.default_rng(seed)
    size = len(truth.weak)

    def gap(index: npt.NDArray[np.intp]) -> float:
        w, s = truth.weak[index], truth.strong[index]
        return 100 * (
            apgr(quality_curve(first[index], w, s)) - apgr(quality_curve(second[index], w, s))
        )

    draws = [gap(rng.integers(0, size, size)) for _ in range(n)]
    finite = [d for d in draws if not math.isnan(d)]
    point = gap(np.arange(size))
    if not finite:
        return point, math.nan, math.nan
    low, high = np.percentile(finite, [2.5, 97.5])
    return point, float(low), float(high)
