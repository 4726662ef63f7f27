"""Routing evaluation: the quality-vs-cloud-share curve and RouteLLM's metrics.

A router's scores rank the test queries; sending the top ``k`` of ``n`` to the strong model
gives one point of the curve, (cloud share ``k/n``, mean quality). Truth per query is the mean
observed quality of each model (``mu``), so multi-sample data is used fully. Tied scores are
averaged over (the expected curve under random tie-breaking), so a constant router *is* the
random router. Metrics (Ong et al., RouteLLM), all in percent:

- CPT(x%): the smallest cloud share whose quality reaches
  ``q_weak + x * (q_strong - q_weak)``;
- AUC: area under the curve (trapezoids over ``k/n``);
- APGR: ``(AUC - q_weak) / (q_strong - q_weak)``; random = 50, an ideal ranker > 50.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router_models.labels import pair_observations
from router_models.observations import Observation, PathLike

__all__ = [
    "CPT_LEVELS",
    "Curve",
    "RouterReport",
    "Truth",
    "apgr",
    "auc",
    "cpt",
    "evaluate_router",
    "evaluate_routers",
    "markdown_table",
    "oracle_scores",
    "plot_curves",
    "prompt_length_scores",
    "quality_curve",
    "random_curve",
    "save_reports",
    "truth_from_observations",
]

FloatArray = npt.NDArray[np.float64]
CPT_LEVELS: tuple[float, ...] = (0.2, 0.5, 0.8)


@dataclass(frozen=True)
class Truth:
    """Per-query mean observed quality of the weak and strong model on a test set."""

    query_ids: tuple[str, ...]
    prompts: tuple[str, ...]
    weak: FloatArray
    strong: FloatArray
    weak_model: str = "weak"
    strong_model: str = "strong"

    def __post_init__(self) -> None:
        n = len(self.query_ids)
        if not (len(self.prompts) == len(self.weak) == len(self.strong) == n) or n == 0:
            raise ValueError("truth needs equally long, non-empty query, prompt and quality arrays")


def truth_from_observations(observations: Iterable[Observation], weak: str, strong: str) -> Truth:
    """Truth = each model's mean score per query, over the queries both models answered."""
    pairs = pair_observations(observations, weak, strong)
    return Truth(
        query_ids=tuple(p.query_id for p in pairs),
        prompts=tuple(p.prompt for p in pairs),
        weak=np.asarray([np.mean([o.score for o in p.weak]) for p in pairs], dtype=np.float64),
        strong=np.asarray([np.mean([o.score for o in p.strong]) for p in pairs], dtype=np.float64),
        weak_model=weak,
        strong_model=strong,
    )


@dataclass(frozen=True)
class Curve:
    """Mean quality (fraction, not percent) at cloud shares ``k/n``, ``k = 0..n``."""

    share: FloatArray
    quality: FloatArray


def _check(
    scores: npt.ArrayLike, weak: npt.ArrayLike, strong: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    w = np.asarray(weak, dtype=np.float64).reshape(-1)
    g = np.asarray(strong, dtype=np.float64).reshape(-1)
    if not len(s) == len(w) == len(g) or len(s) == 0:
        raise ValueError(f"scores ({len(s)}) and truth ({len(w)}, {len(g)}) must match, non-empty")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    return s, w, g


def quality_curve(scores: npt.ArrayLike, weak: npt.ArrayLike, strong: npt.ArrayLike) -> Curve:
    """Quality when the top-scored share goes to the strong model; ties get their mean gain."""
    s, w, g = _check(scores, weak, strong)
    n = len(s)
    order = np.argsort(-s, kind="stable")
    gain = (g - w)[order]
    sorted_scores = s[order]
    # Replace each tied group's gains by their mean: the expectation over tie orders.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    sizes = np.diff(np.r_[starts, n])
    group_mean = np.add.reduceat(gain, starts) / sizes
    gain = np.repeat(group_mean, sizes)
    quality = (w.sum() + np.r_[0.0, np.cumsum(gain)]) / n
    return Curve(share=np.arange(n + 1) / n, quality=quality)


def random_curve(weak: npt.ArrayLike, strong: npt.ArrayLike) -> Curve:
    """The random router's expected curve: a straight line from weak to strong quality."""
    w = np.asarray(weak, dtype=np.float64)
    return quality_curve(np.zeros(len(w)), w, strong)


def oracle_scores(weak: npt.ArrayLike, strong: npt.ArrayLike) -> FloatArray:
    """The oracle ranks queries by their true gain; no router beats it at any share."""
    return np.asarray(strong, dtype=np.float64) - np.asarray(weak, dtype=np.float64)


def prompt_length_scores(prompts: Sequence[str]) -> FloatArray:
    """The length baseline: longer prompts go to the strong model first (characters)."""
    return np.asarray([len(p) for p in prompts], dtype=np.float64)


def _endpoints(curve: Curve) -> tuple[float, float]:
    return float(curve.quality[0]), float(curve.quality[-1])


def cpt(curve: Curve, level: float) -> float:
    """CPT(level) as a fraction: smallest share reaching ``level`` of the weak->strong gap.

    NaN when the strong model is not better than the weak one on this set.
    """
    q_weak, q_strong = _endpoints(curve)
    gap = q_strong - q_weak
    if gap <= 0:
        return math.nan
    reached = curve.quality >= q_weak + level * gap - 1e-12
    return float(curve.share[int(np.argmax(reached))])


def auc(curve: Curve) -> float:
    """Area under quality vs cloud share (a fraction; share spans [0, 1])."""
    q, x = curve.quality, curve.share
    return float(np.sum((q[1:] + q[:-1]) * np.diff(x)) / 2)


def apgr(curve: Curve) -> float:
    """Average performance gap recovered: (AUC - q_weak) / (q_strong - q_weak)."""
    q_weak, q_strong = _endpoints(curve)
    gap = q_strong - q_weak
    return math.nan if gap <= 0 else (auc(curve) - q_weak) / gap


@dataclass(frozen=True)
class RouterReport:
    """Metrics of one router on one test set; ``cpt`` maps level -> share (fractions)."""

    name: str
    curve: Curve
    cpt: dict[float, float]
    apgr: float
    auc: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_percent(self) -> dict[str, float]:
        row = {f"CPT({round(level * 100)}%)": 100 * v for level, v in self.cpt.items()}
        row.update({"APGR": 100 * self.apgr, "AUC": 100 * self.auc})
        return row

    def to_dict(self) -> dict[str, Any]:
        """Percent metrics as JSON-ready values (NaN -> None)."""
        metrics = {k: None if math.isnan(v) else v for k, v in self.as_percent().items()}
        return {"name": self.name, **metrics, **self.extra}


def _report(name: str, curve: Curve, levels: Sequence[float]) -> RouterReport:
    return RouterReport(
        name=name,
        curve=curve,
        cpt={level: cpt(curve, level) for level in levels},
        apgr=apgr(curve),
        auc=auc(curve),
    )


def evaluate_router(
    name: str,
    scores: npt.ArrayLike,
    truth: Truth,
    levels: Sequence[float] = CPT_LEVELS,
) -> RouterReport:
    """Curve and metrics of one router's scores (aligned with ``truth.query_ids``)."""
    return _report(name, quality_curve(scores, truth.weak, truth.strong), levels)


def evaluate_routers(
    routers: Mapping[str, npt.ArrayLike],
    truth: Truth,
    *,
    baselines: bool = True,
    levels: Sequence[float] = CPT_LEVELS,
) -> list[RouterReport]:
    """Reports for several routers, preceded by the random, prompt-length and oracle rows."""
    reports = []
    if baselines:
        reports.append(_report("random", random_curve(truth.weak, truth.strong), levels))
        reports.append(
            evaluate_router("prompt-length", prompt_length_scores(truth.prompts), truth, levels)
        )
    reports.extend(evaluate_router(name, s, truth, levels) for name, s in routers.items())
    if baselines:
        reports.append(
            evaluate_router("oracle", oracle_scores(truth.weak, truth.strong), truth, levels)
        )
    return reports


def markdown_table(reports: Sequence[RouterReport], *, title: str | None = None) -> str:
    """A markdown table of the reports, metrics in percent with one decimal."""
    if not reports:
        raise ValueError("no reports to tabulate")
    columns = list(reports[0].as_percent())
    lines = [f"### {title}", ""] if title else []
    lines.append("| router | " + " | ".join(columns) + " |")
    lines.append("|---|" + "---:|" * len(columns))
    for report in reports:
        values = report.as_percent()
        cells = ["–" if math.isnan(values[c]) else f"{values[c]:.1f}" for c in columns]
        lines.append(f"| {report.name} | " + " | ".join(cells) + " |")
    note = _no_gap_note(reports[0].curve)
    return "\n".join([*lines, *(["", note] if note else [])]) + "\n"


def _no_gap_note(curve: Curve) -> str | None:
    """Why CPT and APGR show "–": they measure a weak->strong gap that these queries lack."""
    q_weak, q_strong = _endpoints(curve)
    if q_strong > q_weak:
        return None
    return (
        f"CPT and APGR are undefined (–): on these {len(curve.share) - 1} test queries the "
        f"strong model's mean quality ({100 * q_strong:.1f}%) is not above the weak model's "
        f"({100 * q_weak:.1f}%), so there is no gap to recover; compare AUC instead."
    )


def plot_curves(
    reports: Sequence[RouterReport], path: PathLike, *, title: str = "quality vs cloud share"
) -> Path:
    """Write a PNG of every report's curve (percent axes) with the weak/strong levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    try:
        for report in reports:
            style = "--" if report.name in ("random", "oracle", "prompt-length") else "-"
            axes.plot(
                100 * report.curve.share,
                100 * report.curve.quality,
                style,
                label=f"{report.name} (APGR {100 * report.apgr:.1f})",
            )
        q_weak, q_strong = _endpoints(reports[0].curve)
        for level, label in ((q_weak, "weak"), (q_strong, "strong")):
            axes.axhline(100 * level, color="grey", linewidth=0.6, linestyle=":")
            axes.annotate(label, (0, 100 * level), fontsize=7, color="grey", ha="left", va="bottom")
        axes.set_xlabel("calls to the strong model (%)")
        axes.set_ylabel("mean quality (%)")
        axes.set_title(title)
        axes.legend(fontsize=7, loc="lower right")
        axes.grid(alpha=0.3)
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.tight_layout()
        figure.savefig(out)
    finally:
        plt.close(figure)
    return out


def save_reports(
    reports: Sequence[RouterReport],
    out_dir: PathLike,
    *,
    name: str = "evaluation",
    title: str | None = None,
) -> dict[str, Path]:
    """Write ``<name>.md`` (table), ``<name>.json`` (metrics) and ``<name>.png`` (curves)."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": directory / f"{name}.md",
        "json": directory / f"{name}.json",
        "png": directory / f"{name}.png",
    }
    paths["markdown"].write_text(markdown_table(reports, title=title), encoding="utf-8")
    paths["json"].write_text(json.dumps([r.to_dict() for r in reports], indent=2), encoding="utf-8")
    plot_curves(reports, paths["png"], title=title or "quality vs cloud share")
    return paths
