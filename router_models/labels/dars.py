"""``dars`` labels: soft targets P(U_strong > U_weak) from posteriors over each model's
expected quality, with cost and risk as a shift (distribution-aware routing supervision)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from router_models.labels.base import FloatArray, LabelSet
from router_models.labels.capability import label_set_from_pairs, pair_observations, pair_stats
from router_models.observations import Observation

__all__ = ["DEFAULT_BETA", "DEFAULT_LAMBDA", "dars_labels", "prob_beta_greater"]

DEFAULT_LAMBDA = 0.05
DEFAULT_BETA = 0.2


def prob_beta_greater(
    a_strong: npt.ArrayLike,
    b_strong: npt.ArrayLike,
    a_weak: npt.ArrayLike,
    b_weak: npt.ArrayLike,
    shift: npt.ArrayLike = 0.0,
    *,
    grid: int = 4096,
) -> FloatArray:
    """P(X_strong - X_weak > shift) for independent Beta variables, by numeric integration.

    Sums ``P(X_weak in bin) * P(X_strong > bin centre + shift)`` over ``grid`` equal bins of
    [0, 1] (error O(1/grid), deterministic); unique parameter rows are computed once.
    """
    from scipy.special import betainc

    params = np.column_stack(
        np.broadcast_arrays(
            *(np.asarray(v, dtype=np.float64) for v in (a_strong, b_strong, a_weak, b_weak, shift))
        )
    )
    unique, inverse = np.unique(params, axis=0, return_inverse=True)
    edges = np.linspace(0.0, 1.0, grid + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    out = np.empty(len(unique))
    for start in range(0, len(unique), 256):
        chunk = unique[start : start + 256]
        a_s, b_s, a_w, b_w, d = (chunk[:, j : j + 1] for j in range(5))
        mass_weak = np.diff(betainc(a_w, b_w, edges[None, :]), axis=1)
        point = np.clip(centres[None, :] + d, 0.0, 1.0)
        above = 1.0 - betainc(a_s, b_s, point)
        out[start : start + 256] = np.sum(mass_weak * above, axis=1)
    return np.clip(out[np.asarray(inverse).reshape(-1)], 0.0, 1.0)


def _posterior(
    rows: Sequence[Observation], prior: tuple[float, float], binary: bool
) -> tuple[float, float, float, float]:
    """(a, b, mean, variance) of the posterior over a model's expected score on one query.

    0/1 scores: Beta(prior_a + successes, prior_b + failures). Fractional scores: a Gaussian
    with the moments of the scores plus the prior as pseudo-observations (prior_a ones,
    prior_b zeros); a and b are then NaN.
    """
    scores = np.asarray([obs.score for obs in rows], dtype=np.float64)
    a0, b0 = prior
    if binary:
        a, b = a0 + scores.sum(), b0 + len(scores) - scores.sum()
        return a, b, a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    n = len(scores) + a0 + b0
    mean = (scores.sum() + a0) / n
    second = (np.sum(scores**2) + a0) / n
    return math.nan, math.nan, mean, max(second - mean**2, 0.0) / n


def dars_labels(
    observations: Iterable[Observation],
    weak: str,
    strong: str,
    *,
    lam: float = DEFAULT_LAMBDA,
    beta: float = DEFAULT_BETA,
    costs: Mapping[str, float] | None = None,
    prior: tuple[float, float] = (1.0, 1.0),
    weighting: Literal["inverse-variance", "confidence", "uniform"] = "inverse-variance",
    grid: int = 4096,
) -> LabelSet:
    """Distribution-aware labels: target = P(U_strong > U_weak), U = mu_q - lam*mu_c - beta*sigma_q.

    The expected qualities get posteriors (Beta for 0/1 scores, Gaussian otherwise, prior
    ``prior`` as pseudo-counts); cost and risk enter as a fixed shift
    ``lam*(c_s - c_w) + beta*(sigma_s - sigma_w)``, so the target is
    P(q_strong - q_weak > shift). ``weighting``: ``inverse-variance`` = 1 / Var(q_s - q_w)
    scaled to mean 1 (more observations -> more weight); ``confidence`` = |2p - 1|;
    ``uniform`` = 1. Deterministic (numeric integration), no seed.
    """
    pairs = pair_observations(observations, weak, strong)
    weak_stats, strong_stats, cost_source = pair_stats(pairs, costs)
    shift = lam * (strong_stats.cost - weak_stats.cost) + beta * (
        strong_stats.sigma - weak_stats.sigma
    )
    binary = np.asarray(
        [all(obs.score in (0.0, 1.0) for obs in (*p.weak, *p.strong)) for p in pairs]
    )
    post = np.asarray(
        [
            (*_posterior(p.weak, prior, bool(b)), *_posterior(p.strong, prior, bool(b)))
            for p, b in zip(pairs, binary, strict=True)
        ],
        dtype=np.float64,
    ).reshape(len(pairs), 8)
    a_w, b_w, m_w, v_w, a_s, b_s, m_s, v_s = post.T
    target = np.empty(len(pairs))
    if binary.any():
        target[binary] = prob_beta_greater(
            a_s[binary], b_s[binary], a_w[binary], b_w[binary], shift[binary], grid=grid
        )
    if (~binary).any():
        from scipy.special import ndtr

        gap = m_s[~binary] - m_w[~binary] - shift[~binary]
        spread = np.sqrt(v_s[~binary] + v_w[~binary])
        target[~binary] = ndtr(gap / np.maximum(spread, 1e-12))
    variance = v_s + v_w
    if weighting == "inverse-variance":
        weight = 1.0 / np.maximum(variance, 1e-12)
        weight /= weight.mean()
    elif weighting == "confidence":
        weight = np.abs(2.0 * target - 1.0)
    elif weighting == "uniform":
        weight = np.ones(len(pairs))
    else:
        raise ValueError(f"unknown weighting {weighting!r}")
    params: dict[str, Any] = {
        "lambda": lam,
        "beta": beta,
        "prior": list(prior),
        "weighting": weighting,
        "cost_source": cost_source,
    }
    extra = {"shift": shift, "posterior_var": variance}
    return label_set_from_pairs(
        "dars", pairs, target, weight, (weak_stats, strong_stats), params, extra
    )
