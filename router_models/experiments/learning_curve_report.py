"""Rendering of the learning-curve run: summaries over seeds, the markdown body, JSON, the plot.

Seeds are paired (both arms of one seed replay the same queries in the same order), so the
DARS - single-shot difference is summarised per seed first; "seed spread" is the standard
deviation over seeds of one arm's APGR.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router_models.experiments.common import fmt, summarise

if TYPE_CHECKING:
    from router_models.experiments.learning_curve import Point, Settings, SourceResult

__all__ = ["body", "numbers", "paired", "plot", "series"]

SMALL_N = 100  # "small n": checkpoints up to this many live queries


def series(runs: Sequence[Sequence[Point]], attr: str) -> list[dict[str, float]]:
    """Per checkpoint: mean, std and n over seeds of one point attribute."""
    return [
        summarise([{attr: getattr(run[j], attr)} for run in runs])[attr]
        for j in range(len(runs[0]))
    ]


def paired(
    dars: Sequence[Sequence[Point]], single: Sequence[Sequence[Point]], attr: str
) -> list[dict[str, float]]:
    """Per checkpoint: mean and std over seeds of DARS minus single-shot (same seed)."""
    return [
        summarise(
            [
                {attr: getattr(d[j], attr) - getattr(s[j], attr)}
                for d, s in zip(dars, single, strict=True)
            ]
        )[attr]
        for j in range(len(dars[0]))
    ]


def _promoted_share(runs: Sequence[Sequence[Point]]) -> list[float]:
    """Per checkpoint: share of seeds whose serving router is no longer the start router."""
    out = []
    for j in range(len(runs[0])):
        out.append(
            float(np.mean([any(p.verdict == "promote" for p in run[: j + 1]) for run in runs]))
        )
    return out


def numbers(results: Sequence[SourceResult], settings: Settings) -> dict[str, Any]:
    """The JSON: settings, per source the baselines, and per router / scheme / checkpoint the
    seed summaries, the paired differences and every seed's points."""
    out: dict[str, Any] = {
        "settings": {
            "checkpoints": list(settings.checkpoints),
            "n_seeds": settings.n_seeds,
            "routers": list(settings.routers),
            "gate_fraction": settings.gate_fraction,
            "margin_apgr_points": settings.margin,
            "min_gate_queries": settings.min_gate_queries,
            "start_router": settings.start_router,
        },
        "sources": [],
    }
    for r in results:
        entry: dict[str, Any] = {
            "name": r.name,
            "weak": r.weak,
            "strong": r.strong,
            "n_pool": r.n_pool,
            "n_test": r.n_test,
            "obs_per_pair": r.obs_per_pair,
            "checkpoints": r.checkpoints,
            "start_apgr": r.start_apgr,
            "baselines": r.baselines,
            "routers": {},
        }
        for kind, arms in r.curves.items():
            entry["routers"][kind] = {
                "summary": {
                    scheme: {
                        "candidate_apgr": series(runs, "candidate_apgr"),
                        "promoted_apgr": series(runs, "promoted_apgr"),
                        "share_promoted_by_now": _promoted_share(runs),
                    }
                    for scheme, runs in arms.items()
                },
                "dars_minus_single": {
                    "candidate_apgr": paired(arms["dars"], arms["single-shot"], "candidate_apgr"),
                    "promoted_apgr": paired(arms["dars"], arms["single-shot"], "promoted_apgr"),
                },
                "runs": {
                    scheme: [[vars(p) for p in run] for run in runs]
                    for scheme, runs in arms.items()
                },
            }
        out["sources"].append(entry)
    return out


def _table(r: SourceResult, kind: str) -> list[str]:
    arms = r.curves[kind]
    d, s = arms["dars"], arms["single-shot"]
    cols = {
        "dc": series(d, "candidate_apgr"),
        "sc": series(s, "candidate_apgr"),
        "diff_c": paired(d, s, "candidate_apgr"),
        "dp": series(d, "promoted_apgr"),
        "sp": series(s, "promoted_apgr"),
        "diff_p": paired(d, s, "promoted_apgr"),
    }
    shares = {"d": _promoted_share(d), "s": _promoted_share(s)}
    lines = [
        "| n live queries | n train / gate (mean) | candidate DARS | candidate single-shot | "
        "DARS − single (paired) | promoted DARS | promoted single-shot | DARS − single (paired) | "
        "replaced start router (DARS / single) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for j, n in enumerate(r.checkpoints):
        n_train = round(float(np.mean([run[j].n_train for run in d])))
        n_gate = round(float(np.mean([run[j].n_gate for run in d])))
        replaced = f"{100 * shares['d'][j]:.0f}% / {100 * shares['s'][j]:.0f}%"
        lines.append(
            f"| {n} | {n_train} / {n_gate} | {fmt(cols['dc'][j])} | "
            f"{fmt(cols['sc'][j])} | {_signed(cols['diff_c'][j])} | {fmt(cols['dp'][j])} | "
            f"{fmt(cols['sp'][j])} | {_signed(cols['diff_p'][j])} | {replaced} |"
        )
    return lines


def _verdicts(r: SourceResult, kind: str) -> str:
    """How often each gate reason came up, over every seed and checkpoint, per arm."""
    parts = []
    for scheme, runs in r.curves[kind].items():
        counts = Counter(p.reason for run in runs for p in run)
        parts.append(f"{scheme}: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    return "Gate reasons (all seeds and checkpoints): " + "; ".join(parts) + "."


def _signed(entry: dict[str, float]) -> str:
    return f"{entry['mean']:+.1f} ± {entry['std']:.1f}"


def _findings(results: Sequence[SourceResult]) -> list[str]:
    """Plain statements computed from the numbers: DARS vs single-shot at small n."""
    out = []
    wins = cells = beyond = 0
    for r in results:
        for kind, arms in r.curves.items():
            d, s = arms["dars"], arms["single-shot"]
            diff = paired(d, s, "candidate_apgr")
            spread_d, spread_s = series(d, "candidate_apgr"), series(s, "candidate_apgr")
            parts = []
            for j, n in enumerate(r.checkpoints):
                if n > SMALL_N:
                    continue
                spread = max(spread_d[j]["std"], spread_s[j]["std"])
                cells += 1
                wins += diff[j]["mean"] > 0
                beyond += diff[j]["mean"] > spread
                stderr = diff[j]["std"] / np.sqrt(diff[j]["n"])
                parts.append(
                    f"n={n}: {diff[j]['mean']:+.1f} ± {stderr:.1f} s.e. (paired sd "
                    f"{diff[j]['std']:.1f}; seed spread {spread:.1f})"
                )
            out.append(
                f"- {r.name}, {kind}: DARS − single-shot candidate APGR " + "; ".join(parts) + "."
            )
    out.insert(
        0,
        f"- At n ≤ {SMALL_N} live queries, the DARS candidate's mean test APGR is above the "
        f"single-shot candidate's in {wins} of {cells} (source, router, n) cells, and above it by "
        f"more than the larger seed standard deviation of the two arms in {beyond} of {cells}.",
    )
    return out


def body(results: Sequence[SourceResult], settings: Settings, png: str) -> str:
    """The report's markdown below the regeneration header."""
    lines = [
        "## Setup",
        "",
        "- Each source is replayed as live traffic; its recorded scores stand in for the judge. "
        "The **test slice** (fold 0 of a seeded query hash; for GSM8K the bundled router's own "
        "held-out fold) is fixed before replay: no training, no gate, no tuning touches it. Test "
        "truth = each model's mean over all of a query's observations.",
        f"- After n live queries (checkpoints {', '.join(map(str, settings.checkpoints))}, and the "
        f"whole pool), the loop retrains a fresh {'/'.join(settings.routers)} router (registry "
        "defaults) on the seen queries minus the gate's share "
        f"(≈{100 * settings.gate_fraction:.0f}% of queries, by query hash). **DARS** arm: labels "
        "from all observations of each query-model pair (λ=0.05, β=0.2, inverse-variance "
        "weights). **Single-shot** arm: one drawn observation per pair, for the labels and for "
        "the gate's truth alike (what a loop that samples once sees).",
        f"- **Gate** (`router_models.promotion`): candidate vs serving router on the seen "
        f"queries held out from training, APGR margin {settings.margin:g} points, at least "
        f"{settings.min_gate_queries} gate queries; else the serving router stays. Serving at "
        f"n = 0: `{settings.start_router}`.",
        f"- {settings.n_seeds} seeds (replay order, single-shot draw, router random state); mean ± "
        "std over seeds. DARS − single columns are paired by seed. **candidate** = the router "
        "retrained at that checkpoint (ungated); **promoted** = the router serving after the "
        "gate's verdict.",
        "",
    ]
    for r in results:
        base = r.baselines
        lines += [
            f"## {r.name}: {r.weak} → {r.strong}",
            "",
            f"- {r.n_pool} replayable queries, {r.n_test} test queries, {r.obs_per_pair:.1f} "
            f"observations per query-model pair.",
            f"- Test APGR of the start router: **{r.start_apgr:.1f}**; random "
            f"{fmt(base['random']['APGR'])}, prompt length {fmt(base['prompt-length']['APGR'])}, "
            f"oracle {fmt(base['oracle']['APGR'])}.",
            "",
        ]
        for kind in r.curves:
            lines += [f"**{kind}** (test APGR %)", "", *_table(r, kind), "", _verdicts(r, kind), ""]
    lines += [
        f"![learning curves]({png})",
        "",
        "## Computed comparisons",
        "",
        *_findings(results),
        "",
    ]
    return "\n".join(lines)


def plot(results: Sequence[SourceResult], path: Path) -> None:
    """One panel per (source, router): promoted (solid, ±std band) and candidate (dashed) APGR
    against live queries, both arms, with the start router's APGR as a grey line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(r, kind) for r in results for kind in r.curves]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    figure, axes = plt.subplots(
        rows, cols, figsize=(4.6 * cols, 3.6 * rows), dpi=110, squeeze=False
    )
    colours = {"dars": "tab:blue", "single-shot": "tab:orange"}
    try:
        for ax, (r, kind) in zip(axes.flat, panels, strict=False):
            x = np.asarray(r.checkpoints, dtype=float)
            for scheme, runs in r.curves[kind].items():
                promoted = series(runs, "promoted_apgr")
                candidate = series(runs, "candidate_apgr")
                mean = np.asarray([p["mean"] for p in promoted])
                std = np.asarray([p["std"] for p in promoted])
                ax.plot(
                    x, mean, "-o", color=colours[scheme], markersize=3, label=f"{scheme} promoted"
                )
                ax.fill_between(x, mean - std, mean + std, color=colours[scheme], alpha=0.15)
                ax.plot(
                    x,
                    [c["mean"] for c in candidate],
                    "--",
                    color=colours[scheme],
                    linewidth=0.9,
                    label=f"{scheme} candidate",
                )
            ax.axhline(r.start_apgr, color="grey", linewidth=0.8, label="start router")
            ax.axhline(50, color="grey", linewidth=0.6, linestyle=":")
            ax.set_xscale("log")
            ax.set_xticks(x, [str(n) for n in r.checkpoints])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlabel("live queries observed", fontsize=7)
            ax.set_ylabel("test APGR %", fontsize=7)
            ax.set_title(f"{r.name}\n{r.weak} → {r.strong} ({kind})", fontsize=7)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[len(panels) :]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=6, loc="best")
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    finally:
        plt.close(figure)
