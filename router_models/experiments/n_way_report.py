"""The N-way report: Markdown tables, the JSON numbers and one PNG of the curves.

Kept apart from the protocol (:mod:`router_models.experiments.n_way`) so that the numbers and
their presentation change independently.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router_models.evaluate_multi import REACH_LEVELS, MultiReport, upper_hull
from router_models.experiments.common import ReportFiles, fmt
from router_models.prices import CHARS_PER_TOKEN, DEFAULT_OUTPUT_TOKENS, price_table_markdown

if TYPE_CHECKING:
    from router_models.experiments.n_way import Comparison, Settings, StudyResult

__all__ = ["MEANINGFUL_AIQ", "render", "verdict"]

_REACH = [f"cost@{round(100 * x)}%" for x in REACH_LEVELS]


# Smallest AIQ difference called a win or a loss: half a quality point (percent scale).
MEANINGFUL_AIQ = 0.005


def _call(c: Comparison) -> str:
    if c.low > 0 and c.diff >= MEANINGFUL_AIQ:
        return "win"
    if c.high < 0 and c.diff <= -MEANINGFUL_AIQ:
        return "loss"
    return "tie"


def verdict(result: StudyResult) -> str:
    """One plain sentence: does N-way beat the best two-model router on this study?

    Per split, a win or loss needs the paired bootstrap interval to exclude 0 *and* the
    difference to be at least :data:`MEANINGFUL_AIQ`; anything else is a tie. The study's
    verdict is "beats" / "is worse" only when every split says so.
    """
    splits = result.split_comparisons or ([result.comparison] if result.comparison else [])
    if not splits:
        return "not compared"
    calls = [_call(c) for c in splits]
    diffs = np.asarray([c.diff for c in splits])
    tally = f"{calls.count('win')} wins / {calls.count('tie')} ties / {calls.count('loss')} losses"
    span = f"mean ΔAIQ {diffs.mean():+.4f} over {len(splits)} splits ({tally})"
    if all(c == "win" for c in calls):
        return f"N-way beats the two-model router: {span}"
    if all(c == "loss" for c in calls):
        return f"N-way is worse than the two-model router: {span}"
    return f"no consistent difference: {span}"


def _row(report: MultiReport, note: str = "") -> str:
    reach = " | ".join(fmt(report.reach_cost[k], 3) for k in _REACH)
    return f"| {report.name}{note} | {report.aiq:.4f} | {report.max_quality:.4f} | {reach} |"


def _study_section(result: StudyResult) -> str:
    study, n = result.study, result.n_queries
    selected = (
        {result.comparison.n_way, result.comparison.two_model} if result.comparison else set()
    )
    cap = (
        f"at most {study.per_dataset_cap} queries per dataset (seeded hash), "
        if study.per_dataset_cap
        else "all queries, "
    )
    lines = [
        f"### {study.name} ({len(result.models)} models)",
        "",
        f"- File `{study.file}`; {cap}queries train / validation / test: "
        f"{n['train']} / {n['validation']} / {n['test']} "
        "(test: only queries that every model answered).",
        f"- Label (cell quality): {study.label_meaning}.",
        f"- Two-model view: cheapest `{result.pair[0]}` + best `{result.pair[1]}`.",
        f"- **{verdict(result)}** (paired bootstrap over test queries).",
        "",
        "| model | test mean quality | test USD / 1k requests |",
        "|---|---:|---:|",
    ]
    for k, model in enumerate(result.models):
        lines.append(
            f"| {model} | {result.singles.quality[k]:.4f} | {1000 * result.singles.cost[k]:.4f} |"
        )
    head = " | ".join(f"USD/1k to {k.split('@')[1]} of best" for k in _REACH)
    lines += [
        "",
        f"| router | AIQ | max quality | {head} |",
        "|---|---:|---:|" + "---:|" * len(_REACH),
    ]
    for name, report in result.reports.items():
        lines.append(_row(report, " (selected)" if name in selected else ""))
    if result.split_comparisons:
        lines += [
            "",
            "| split | N-way | two-model | ΔAIQ | 95% CI | call |",
            "|---|---|---|---:|---|---|",
        ]
        for i, c in enumerate(result.split_comparisons):
            lines.append(
                f"| {i} | {c.n_way} | {c.two_model} | {c.diff:+.4f} | "
                f"{c.low:+.4f} to {c.high:+.4f} | {_call(c)} |"
            )
    if result.split_single_shot:
        table = np.asarray(result.split_single_shot)
        counted, uniform, single = table.mean(axis=0)
        lines += [
            "",
            f"DARS vs single-shot labels ({len(table)} splits; the selected N-way router of "
            f"each split, its parameters; single-shot = mean of {len(result.single_shot_aiq)} "
            f"draws): test AIQ DARS with count weights {counted:.4f}, DARS with uniform "
            f"weights {uniform:.4f}, single-shot {single:.4f}. DARS (count weights) is "
            f"higher than single-shot on {int(np.sum(table[:, 0] > table[:, 2]))} of "
            f"{len(table)} splits, DARS (uniform) on {int(np.sum(table[:, 1] > table[:, 2]))}.",
        ]
    return "\n".join(lines)


def _summary(results: Sequence[StudyResult]) -> str:
    lines = [
        "| study | K | test queries | best single | mixtures AIQ | two-model AIQ | "
        "N-way AIQ | N-way oracle AIQ | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if r.comparison is None:
            continue
        lines.append(
            f"| {r.study.name} | {len(r.models)} | {r.n_queries['test']} | "
            f"{r.singles.quality.max():.4f} | {r.reports['N-way random mixtures'].aiq:.4f} | "
            f"{r.reports[r.comparison.two_model].aiq:.4f} | "
            f"{r.reports[r.comparison.n_way].aiq:.4f} | {r.reports['N-way oracle'].aiq:.4f} | "
            f"{verdict(r)} |"
        )
    return "\n".join(lines)


def _method(settings: Settings) -> str:
    return "\n".join(
        [
            "## Method",
            "",
            "- Decision: `argmax_k q_hat_k - lambda * c_k / max_j c_j` (ties to the cheaper "
            "model); `c_k` = model k's mean cost per request on the training queries. The "
            "chosen model's cost never rises with lambda, so the sweep traces a quality-vs-cost "
            "curve from 'best predicted quality' (lambda = 0) to 'always the cheapest'.",
            "- AIQ (RouterBench): area under the non-decreasing upper convex hull of the "
            "curve divided by the cost range of the single models (a mean quality; flat beyond "
            "a curve's ends). 'USD/1k to x% of best': the cheapest point of that hull reaching "
            "x% of the best single model's test quality ('–': never).",
            f"- Split by a seeded hash of the query id: test {settings.test_fraction:.0%}, "
            f"validation {settings.validation_fraction:.0%} of the rest. Hyper-parameters "
            "(two per router kind) and the reported kind of each view are chosen by "
            "validation AIQ; the chosen router is refitted on train + validation and scored "
            "once on test. Training rows with a test prompt (normalised text) are dropped.",
            "- Labels: DARS cells (mean of every observation, weight = observation count, "
            "rescaled to mean 1; missing cells masked). Single-shot: one seeded draw per cell.",
            f"- Costs: tokens = characters / {CHARS_PER_TOKEN:g}; output tokens from the "
            f"responses where the file has them (AlpacaEval), else {DEFAULT_OUTPUT_TOKENS:g} "
            "per query for every model. Prices (USD per 1M tokens) below: list prices for API "
            "models, a size-based assumption for open-weights ones (`router_models/prices.py`).",
        ]
    )


def _plot(path: Path, results: Sequence[StudyResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2
    rows = (len(results) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(11, 4.2 * rows), squeeze=False)
    for ax, r in zip(axes.flat, results, strict=False):
        names = ["N-way random mixtures", "N-way oracle"]
        if r.comparison is not None:
            names += [r.comparison.two_model, r.comparison.n_way]
        for name in names:
            hull = upper_hull(r.reports[name].curve)
            ax.plot(1000 * hull.cost, hull.quality, marker=".", label=name)
        ax.scatter(1000 * r.singles.cost, r.singles.quality, color="black", s=14, zorder=3)
        for k, model in enumerate(r.models):
            ax.annotate(
                model, (1000 * r.singles.cost[k], r.singles.quality[k]), fontsize=6, alpha=0.7
            )
        wide = r.singles.cost.max() > 5 * r.singles.cost.min()  # log only for wide ranges
        ax.set_xscale("log" if wide else "linear")
        if not wide:
            ax.ticklabel_format(axis="x", style="plain", useOffset=False)
        ax.set_title(r.study.name)
        ax.set_xlabel("USD per 1k requests" + (" (log)" if wide else ""))
        ax.set_ylabel("mean quality")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(results) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _numbers(results: Sequence[StudyResult]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in results:
        out[r.study.name] = {
            "models": list(r.models),
            "two_model_pair": list(r.pair),
            "queries": r.n_queries,
            "single_models": {
                m: {"quality": r.singles.quality[k], "usd_per_1k": 1000 * r.singles.cost[k]}
                for k, m in enumerate(r.models)
            },
            "routers": {name: rep.as_row() for name, rep in r.reports.items()},
            "chosen_parameters": {
                k: {p: str(v) for p, v in d.items()} for k, d in r.chosen.items()
            },
            "validation_aiq": r.validation_aiq,
            "comparison": None if r.comparison is None else vars(r.comparison),
            "single_shot": {"router": r.single_shot_router, "aiq": r.single_shot_aiq},
            "splits": [vars(c) for c in r.split_comparisons],
            "splits_dars_count_dars_uniform_single_shot": [list(p) for p in r.split_single_shot],
            "verdict": verdict(r),
        }
    return out


def render(
    report: ReportFiles, results: Sequence[StudyResult], settings: Settings
) -> dict[str, Path]:
    """Write the report files; returns their paths."""
    png = report.png("curves")
    png.parent.mkdir(parents=True, exist_ok=True)
    _plot(png, results)
    models = sorted({m for r in results for m in r.models})
    body = "\n\n".join(
        [
            "## Summary",
            _summary(results),
            f"![quality vs cost]({png.name})",
            _method(settings),
            "### Prices",
            price_table_markdown(models),
            "## Studies",
            *(_study_section(r) for r in results),
        ]
    )
    paths = report.write(
        "N-way routing: K-model quality routers vs the best two-model router",
        [r.study.file for r in results],
        body,
        _numbers(results),
    )
    return {**paths, "png": png}
