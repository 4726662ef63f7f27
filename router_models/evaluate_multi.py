"""Evaluation of K-model routers: the quality-vs-cost curve as the trade-off knob sweeps.

Decision rule (DARS utility without the risk term): query ``i`` goes to
``argmax_k  q_hat[i, k] - lambda * c_k / max_j c_j``, with ``c_k`` the model's expected cost
per request (USD) and ties broken towards the cheaper model. ``lambda >= 0`` is the knob, in
quality points per "price of the dearest model". The chosen model's cost never rises when
lambda rises (if ``a`` wins at ``l1`` and ``b`` at ``l2 > l1``, adding the two inequalities
gives ``(l2 - l1)(c_a - c_b) >= 0``), so the mean cost is monotone in the knob: lambda = 0 is
"best predicted quality", lambda -> infinity is "always the cheapest model".

Each lambda gives one point (mean realised cost per query, mean true quality); truth is each
model's mean observed quality per test query. Metrics:

- **AIQ** (RouterBench, Hu et al. 2024): area under the non-decreasing upper convex hull of
  the points (any point between two configurations is reachable by mixing them at random),
  divided by the cost range ``[c_min, c_max]`` of the single models, so it is a mean quality;
  beyond a curve's last point quality stays flat (spending more is never forced).
- **cost to reach x%** of the best single model's mean quality, on that hull (NaN if never);
  x = 100% is the cost of matching the best single model.

Baselines: each single model (a point); random mixtures (the hull of the single models: the
line from the cheapest to the best model, through any model above it); the oracle (the same
rule with the true qualities).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = [
    "REACH_LEVELS",
    "Curve",
    "MultiReport",
    "aiq",
    "aiq_difference",
    "bootstrap_aiq_difference",
    "cost_to_reach",
    "curve_of",
    "decisions",
    "evaluate_curve",
    "lambda_grid",
    "mixture_curve",
    "reports_table",
    "route",
    "single_model_points",
    "sweep",
    "upper_hull",
]

FloatArray = npt.NDArray[np.float64]
REACH_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.95, 1.0)
_GRID_POINTS = 201


@dataclass(frozen=True)
class Curve:
    """Points (mean cost per query in USD, mean quality), sorted by cost."""

    cost: FloatArray
    quality: FloatArray

    def __post_init__(self) -> None:
        if self.cost.shape != self.quality.shape or self.cost.ndim != 1 or not self.cost.size:
            raise ValueError("a curve needs equally long, non-empty cost and quality arrays")


def route(q_hat: FloatArray, unit_cost: FloatArray, lam: float) -> npt.NDArray[np.intp]:
    """The chosen model per query: ``argmax q_hat - lam * unit_cost``, ties to the cheaper."""
    order = np.argsort(unit_cost, kind="stable")  # first maximum in cost order = cheapest
    utility = q_hat[:, order] - lam * unit_cost[order][None, :]
    out: npt.NDArray[np.intp] = order[np.argmax(utility, axis=1)]
    return out


def lambda_grid(q_hat: FloatArray, unit_cost: FloatArray, n: int = _GRID_POINTS) -> FloatArray:
    """0, quantiles of the per-query switching points ``(q_a - q_b) / (c_a - c_b)``, and one
    past the largest: a grid that resolves where the decisions change."""
    a, b = np.triu_indices(len(unit_cost), k=1)
    gap = unit_cost[a] - unit_cost[b]
    valid = gap != 0
    switch = (q_hat[:, a[valid]] - q_hat[:, b[valid]]) / gap[valid][None, :]
    positive = switch[switch > 0]
    if not positive.size:
        return np.asarray([0.0, 1.0])
    inner = np.quantile(positive, np.linspace(0.0, 1.0, n))
    return np.unique(np.concatenate([[0.0], inner, [positive.max() * 2.0 + 1.0]]))


def decisions(
    q_hat: FloatArray, decision_cost: FloatArray, lambdas: FloatArray | None = None
) -> npt.NDArray[np.intp]:
    """The chosen model of every query at every knob value, ``[n_lambdas, n]``."""
    unit = decision_cost / decision_cost.max()
    grid = lambda_grid(q_hat, unit) if lambdas is None else lambdas
    return np.stack([route(q_hat, unit, float(lam)) for lam in grid])


def curve_of(
    choices: npt.NDArray[np.intp],
    truth: FloatArray,
    true_cost: FloatArray,
    rows: npt.NDArray[np.intp] | None = None,
) -> Curve:
    """The points of fixed decisions ``[n_lambdas, n]`` over ``rows`` (all by default; a
    bootstrap passes resampled rows)."""
    index = np.arange(truth.shape[0]) if rows is None else rows
    picked = choices[:, index]
    cost = true_cost[index[None, :], picked].mean(axis=1)
    quality = truth[index[None, :], picked].mean(axis=1)
    order = np.lexsort((quality, cost))
    return Curve(cost[order], quality[order])


def sweep(
    q_hat: FloatArray,
    decision_cost: FloatArray,
    truth: FloatArray,
    true_cost: FloatArray,
    lambdas: FloatArray | None = None,
) -> Curve:
    """The curve of routing by ``q_hat`` with per-model costs ``decision_cost`` ``[K]``,
    scored by ``truth`` and ``true_cost`` ``[n, K]``."""
    return curve_of(decisions(q_hat, decision_cost, lambdas), truth, true_cost)


def bootstrap_aiq_difference(
    choices_a: npt.NDArray[np.intp],
    choices_b: npt.NDArray[np.intp],
    truth: FloatArray,
    true_cost: FloatArray,
    *,
    n_boot: int = 500,
    seed: int = 0,
) -> tuple[float, float, float]:
    """AIQ(a) - AIQ(b) on the test queries and its 95% percentile interval, resampling
    queries (paired: both routers see the same resample; decisions stay fixed)."""
    rng = np.random.default_rng(seed)
    n = truth.shape[0]
    draws = []
    for _ in range(n_boot):
        rows: npt.NDArray[np.intp] = np.asarray(rng.integers(0, n, n), dtype=np.intp)
        draws.append(aiq_difference(choices_a, choices_b, truth, true_cost, rows))
    low, high = np.percentile(draws, [2.5, 97.5])
    return aiq_difference(choices_a, choices_b, truth, true_cost), float(low), float(high)


def aiq_difference(
    choices_a: npt.NDArray[np.intp],
    choices_b: npt.NDArray[np.intp],
    truth: FloatArray,
    true_cost: FloatArray,
    rows: npt.NDArray[np.intp] | None = None,
) -> float:
    """AIQ(a) - AIQ(b) of fixed decisions over ``rows`` (all by default), both over the
    single models' cost range on those rows: one draw of :func:`bootstrap_aiq_difference`."""
    index = np.arange(truth.shape[0]) if rows is None else rows
    singles = single_model_points(truth[index], true_cost[index])
    c_min, c_max = float(singles.cost.min()), float(singles.cost.max())
    a = aiq(curve_of(choices_a, truth, true_cost, rows), c_min, c_max)
    return a - aiq(curve_of(choices_b, truth, true_cost, rows), c_min, c_max)


def single_model_points(truth: FloatArray, true_cost: FloatArray) -> Curve:
    """Each model alone: (its mean cost, its mean quality), one point per model."""
    return Curve(true_cost.mean(axis=0), truth.mean(axis=0))


def upper_hull(curve: Curve) -> Curve:
    """The non-decreasing upper convex hull of the points (RouterBench's reachable frontier)."""
    points = sorted(zip(curve.cost.tolist(), curve.quality.tolist(), strict=True))
    hull: list[tuple[float, float]] = []
    for c, q in points:
        if hull and q <= hull[-1][1]:
            continue  # dearer and not better: never on a non-decreasing frontier
        while hull and hull[-1][0] == c:
            hull.pop()  # same cost, lower quality
        while len(hull) >= 2:
            (c1, q1), (c2, q2) = hull[-2], hull[-1]
            if (c2 - c1) * (q - q1) - (q2 - q1) * (c - c1) >= 0:  # hull[-1] not above the chord
                hull.pop()
            else:
                break
        hull.append((c, q))
    return Curve(np.asarray([h[0] for h in hull]), np.asarray([h[1] for h in hull]))


def mixture_curve(singles: Curve) -> Curve:
    """Random mixtures of single models: the hull of their points."""
    return upper_hull(singles)


def aiq(curve: Curve, c_min: float, c_max: float) -> float:
    """Mean quality of the hull over ``[c_min, c_max]`` (flat beyond its ends)."""
    hull = upper_hull(curve)
    if c_max <= c_min:
        return float(np.interp(c_min, hull.cost, hull.quality))
    knots = np.unique(np.clip(np.concatenate([[c_min, c_max], hull.cost]), c_min, c_max))
    values = np.interp(knots, hull.cost, hull.quality)
    area = float(np.sum(np.diff(knots) * (values[1:] + values[:-1]) / 2.0))
    return area / (c_max - c_min)


def cost_to_reach(curve: Curve, target: float) -> float:
    """Smallest mean cost on the hull whose quality reaches ``target`` (NaN if none)."""
    hull = upper_hull(curve)
    if hull.quality[-1] < target:
        return float("nan")
    if hull.quality[0] >= target:
        return float(hull.cost[0])
    return float(np.interp(target, hull.quality, hull.cost))


@dataclass(frozen=True)
class MultiReport:
    """One router's (or baseline's) numbers on one test set; costs in USD per 1k requests."""

    name: str
    aiq: float
    max_quality: float
    reach_cost: dict[str, float]
    curve: Curve = field(repr=False)

    def as_row(self) -> dict[str, float]:
        return {"AIQ": self.aiq, "max quality": self.max_quality, **self.reach_cost}


def evaluate_curve(
    name: str, curve: Curve, singles: Curve, levels: Sequence[float] = REACH_LEVELS
) -> MultiReport:
    """AIQ over the single models' cost range and cost to reach x% of the best one."""
    best = float(singles.quality.max())
    c_min, c_max = float(singles.cost.min()), float(singles.cost.max())
    reach = {f"cost@{round(100 * x)}%": 1000.0 * cost_to_reach(curve, x * best) for x in levels}
    return MultiReport(
        name=name,
        aiq=aiq(curve, c_min, c_max),
        max_quality=float(curve.quality.max()),
        reach_cost=reach,
        curve=curve,
    )


def reports_table(reports: Mapping[str, MultiReport]) -> list[dict[str, float | str]]:
    """Rows for a Markdown table or JSON."""
    return [{"router": name, **r.as_row()} for name, r in reports.items()]
