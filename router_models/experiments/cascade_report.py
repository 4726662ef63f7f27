"""The cascade report's markdown tables and its quality-vs-cost plot (no computation)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from router_models.cascade import PriceTable
from router_models.experiments.common import fmt

if TYPE_CHECKING:
    from router_models.experiments.cascade import Settings, StudyResult

__all__ = ["plot_costs", "render"]

_DASHED = ("random", "oracle", "prompt-length", "probe: 3 disagree")


def _setup(settings: Settings, png: str, skipped: Sequence[str]) -> list[str]:
    p = settings.prices
    lines = [
        "## Setup",
        "",
        f"- **Split**: per pair, queries go to test when a seeded hash of the query id falls "
        f"in fold 0 of {settings.n_folds} (one third); everything below is chosen on the other "
        "two thirds and reported on the test third once.",
        f"- **Price table** (per call): edge model = {p.edge:g}, cloud model = {p.cloud:g}. A "
        "one-shot router pays one edge call for a kept query and one cloud call for an "
        f"escalated one; the cascade and the hybrid pay k × {p.edge:g} on every query (they "
        "must sample to decide) plus a cloud call per escalation. `cost50` / `cost80` = mean "
        "cost per query at the router's CPT(50%) / CPT(80%).",
        "- **Cascade**: k edge samples, grouped by meaning (the extracted final answer: the "
        "source's `meta.pred` where given; on tasks without one (NQ-open) embedding clusters "
        "with the service's MiniLM at cosine 0.9; the local pair also tries embedding "
        "clusters everywhere at 0.9 / 0.8 and exact text), uncertainty = semantic entropy "
        "(discrete or the paper's estimator) or the disagreement rate. Order `decodes` = "
        "stochastic decodes of one prompt; `variants` = round-robin over prompt variants, "
        "best first (variants ranked by the edge model's train-split accuracy). "
        f"Candidates k ∈ {list(settings.ks)}. Chosen on train: the cheapest operating point "
        f"whose train quality (self-consistency answers kept, escalations answered by the "
        f"cloud) reaches {round(100 * settings.level)}% of the edge→cloud gap.",
        "- **Probe** = the issue's baseline: escalate when 3 edge samples do not all agree.",
        f"- **Routers**: {', '.join(settings.routers)} from the registry, default parameters, "
        "DARS labels of the pair on the train split, embeddings of the prompt (MiniLM).",
        "- **Hybrid**: logistic regression (standardised features, weight = |cloud − edge "
        "quality|, equal-quality queries dropped) on the routers' out-of-fold scores (3 inner "
        "folds of the train split), the chosen cascade's uncertainty and log prompt length.",
        "- Ranking metrics use `router_models/evaluate.py` against the standard truth (each "
        "model's mean observed quality per query), so every row is comparable; the "
        "deployed table scores the answers the cascade would actually return.",
        "- GSM8K responses of `gsm8k-multi` are not embedded: the answer is extracted, and "
        "MiniLM on ~20k chain-of-thought texts would take most of an hour on 2 cores.",
    ]
    lines += [f"- Skipped: {s}" for s in skipped]
    lines += ["", f"![quality vs cost per query]({png})", ""]
    return lines


def _ranking_table(result: StudyResult) -> list[str]:
    lines = [
        f"### {result.name}",
        "",
        f"Edge samples: {result.samples}. Train {result.n_train} / test {result.n_test} "
        f"queries. Chosen on train: **{result.chosen['config']}**, threshold "
        f"{result.chosen['threshold']:.3f} ({result.chosen['candidates']} candidates); "
        f"probe: {result.chosen['probe']}; variant order {result.chosen['variant_ranking']}.",
        "",
        "| router | k | CPT50 % | CPT80 % | APGR % | cost50 | cost80 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result.rows:
        bold = "**" if row["name"] in ("cascade", "hybrid") else ""
        lines.append(
            f"| {bold}{row['name']}{bold} | {row['k'] or '–'} | {fmt(row['CPT50'])} | "
            f"{fmt(row['CPT80'])} | {fmt(row['APGR'])} | {fmt(row['cost50'], 3)} | "
            f"{fmt(row['cost80'], 3)} |"
        )
    gaps = "; ".join(
        f"{name}: {fmt(v[0])} [{fmt(v[1])}, {fmt(v[2])}]" for name, v in result.gaps.items()
    )
    coef = ", ".join(f"{k} {v:+.2f}" for k, v in result.hybrid_coef.items())
    lines += [
        "",
        f"APGR gaps on test, paired bootstrap 95% interval (points): {gaps}.",
        f"Hybrid coefficients (standardised): {coef}.",
        "",
    ]
    return lines


def _deployed_table(results: Sequence[StudyResult], settings: Settings) -> list[str]:
    lines = [
        "## The cascade as deployed (test split, train threshold, self-consistency answers)",
        "",
        "Quality in %; `SC only` = the majority answer of the k samples with no escalation; "
        "`gap` = share of the edge→cloud gap recovered at the train threshold; CPT / cost "
        "= cloud share and cost per query to reach 50% / 80% of the gap with these answers.",
        "",
        "| pair | edge (1 call) | SC only | cloud | cloud share | quality | gap | cost | "
        "CPT50 / cost | CPT80 / cost | cost of cloud only |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        d = r.deployed
        lines.append(
            f"| {r.name} | {fmt(d['edge_quality'])} | {fmt(d['self_consistency_quality'])} | "
            f"{fmt(d['cloud_quality'])} | {fmt(d['share'])} | {fmt(d['quality'])} | "
            f"{fmt(d['gap_recovered'])} | {fmt(d['cost'], 3)} | "
            f"{fmt(d['CPT50'])} / {fmt(d['cost50'], 3)} | {fmt(d['CPT80'])} / "
            f"{fmt(d['cost80'], 3)} | {settings.prices.cloud:g} |"
        )
    return [*lines, ""]


def _findings(results: Sequence[StudyResult]) -> list[str]:
    """Plain comparisons computed from the tables (the reading is in the notes)."""
    out = ["## Computed comparisons", ""]
    for r in results:
        by = {row["name"]: row for row in r.rows}
        best_router = max(
            (n for n in by if n not in ("oracle", "cascade", "hybrid", "probe: 3 disagree")),
            key=lambda n: by[n]["APGR"] if not math.isnan(by[n]["APGR"]) else -math.inf,
        )
        out.append(
            f"- {r.name}: APGR cascade {fmt(by['cascade']['APGR'])}, hybrid "
            f"{fmt(by['hybrid']['APGR'])}, probe {fmt(by['probe: 3 disagree']['APGR'])}, "
            f"best one-shot baseline {best_router} {fmt(by[best_router]['APGR'])}, oracle "
            f"{fmt(by['oracle']['APGR'])}. cost80: cascade {fmt(by['cascade']['cost80'], 3)}, "
            f"hybrid {fmt(by['hybrid']['cost80'], 3)}, {best_router} "
            f"{fmt(by[best_router]['cost80'], 3)}, deployed cascade "
            f"{fmt(r.deployed['cost80'], 3)}."
        )
    return [*out, ""]


def render(
    results: Sequence[StudyResult], settings: Settings, png: str, skipped: Sequence[str]
) -> str:
    """The report body: setup, one ranking table per pair, the deployed table, comparisons."""
    lines = _setup(settings, png, skipped)
    lines += ["## Ranking and cost per pair (test split)", ""]
    for result in results:
        lines += _ranking_table(result)
    lines += _deployed_table(results, settings)
    lines += _findings(results)
    return "\n".join(lines)


def plot_costs(results: Sequence[StudyResult], path: Path, prices: PriceTable) -> Path:
    """One panel per pair: mean quality vs mean cost per query for every router's curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(1, min(2, len(results)))
    rows = max(1, math.ceil(len(results) / cols))
    figure, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), dpi=110, squeeze=False)
    try:
        for ax, r in zip(axes.flat, results, strict=False):
            for name, (cost, quality) in r.curves.items():
                style = "--" if name in _DASHED else "-"
                ax.plot(cost, 100 * quality, style, linewidth=1.2, label=name)
            d = r.deployed
            ax.plot(
                [d["cost"]], [d["quality"]], "k*", markersize=10, label="cascade @ train threshold"
            )
            ax.set_title(r.name, fontsize=9)
            ax.set_xlabel(f"mean cost per query (edge {prices.edge:g}, cloud {prices.cloud:g})")
            ax.set_ylabel("mean quality (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="lower right")
        for ax in list(axes.flat)[len(results) :]:
            ax.axis("off")
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    finally:
        plt.close(figure)
    return path
