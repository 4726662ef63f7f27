"""DARS vs single-shot (and semantic-entropy) labels, same routers, GSM8K data with many samples.

Two protocols, both on queries with many observations per query-model pair:

- **transfer**: train on ``gsm8k-train-multi`` (GSM8K train, 7 RouterDC models x 10 samples),
  test on the RouterDC rows of ``gsm8k-multi`` (GSM8K test, the same models x 10 samples);
- **cross-validation by query** inside ``gsm8k-multi`` for the prompt-variant sources
  (MoT-cascade GPT-4 vs Llama-2-13B, Re2's three models x 4 prompt variants), and on the
  project's own collected file when it exists.

Test truth is always each model's mean observed quality over all of a test query's
observations. Single-shot labels are drawn ``n_draws`` times (seeds 0..n-1) and reported as
mean ± std; DARS labels are deterministic. Every router of one study gets the same seed, so
the label scheme is the only difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from router_models.evaluate import Truth, evaluate_routers, truth_from_observations
from router_models.experiments.common import (
    ROUTER_KINDS,
    FloatArray,
    ReportFiles,
    base_parser,
    fit_and_score,
    fmt,
    limit_threads,
    load_rows,
    make_embedder,
    metric_row,
    paired_labels,
    query_fold,
    say,
    summarise,
    truth_rows,
)
from router_models.features import Embedder
from router_models.labels import LabelSet, choose_pair, pair_observations
from router_models.observations import Observation

__all__ = ["CvSource", "Settings", "Study", "StudyResult", "main", "run", "run_study"]

MODULE = "router_models.experiments.dars_vs_single_shot"
LOCAL_FILE = "router_models/data/local-smollm2-qwen05b.jsonl.gz"
METRICS = ("CPT50", "CPT80", "APGR")


@dataclass(frozen=True)
class CvSource:
    """Models of one ``gsm8k-multi`` source and the (weak, strong) pairs compared on it."""

    name: str
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Settings:
    """What one run covers; the defaults are the committed report's."""

    routers: tuple[str, ...] = ROUTER_KINDS
    n_draws: int = 20
    n_folds: int = 3
    train_file: str = "gsm8k-train-multi.jsonl.gz"
    test_file: str = "gsm8k-multi.jsonl.gz"
    transfer_pairs: tuple[tuple[str, str], ...] = (
        ("mistral-7b-v0.1", "metamath-mistral-7b"),
        ("zephyr-7b-beta", "dolphin-2.9-llama3-8b"),
        ("meta-llama-3-8b", "metamath-mistral-7b"),
    )
    cv_sources: tuple[CvSource, ...] = (
        CvSource("mot-cascade", (("llama-2-13b", "gpt-4"),)),
        CvSource(
            "re2",
            (
                ("text-davinci-003", "gpt-3.5-turbo"),
                ("gpt-3.5-turbo", "gpt-4o-mini-2024-07-18"),
                ("text-davinci-003", "gpt-4o-mini-2024-07-18"),
            ),
        ),
    )
    local_file: str | None = LOCAL_FILE


@dataclass(frozen=True)
class Study:
    """One train/test split of one (weak, strong) pair."""

    train: Sequence[Observation]
    truth: Truth


@dataclass
class StudyResult:
    """Metrics of one study (averaged over its folds) per router and label scheme."""

    name: str
    weak: str
    strong: str
    protocol: str
    n_test: int
    n_train: int
    obs_per_pair: float
    flip_rate: float
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    routers: dict[str, dict[str, Any]] = field(default_factory=dict)


def _fold_mean(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    return {k: float(np.nanmean([r[k] for r in rows])) for k in METRICS}


def _flip_rate(draws: Sequence[LabelSet]) -> float:
    """Share of single-shot labels (over draws) that contradict the mean-quality winner.

    Queries where both models have the same mean quality are left out: no label is wrong.
    """
    gap = draws[0].strong.mu - draws[0].weak.mu
    decided = gap != 0
    if not decided.any() or not draws:
        return math.nan
    return float(np.mean([np.mean((d.target[decided] > 0.5) != (gap[decided] > 0)) for d in draws]))


def run_study(
    name: str,
    protocol: str,
    folds: Sequence[Study],
    weak: str,
    strong: str,
    embed: Embedder,
    settings: Settings,
    *,
    seed: int = 0,
) -> StudyResult:
    """Every router with DARS, semantic-entropy and ``n_draws`` single-shot label sets."""
    pair = [[(weak, strong)]]
    per_router: dict[str, dict[str, list[Any]]] = {
        k: {"dars": [], "semantic-entropy": [], "single-shot": []} for k in settings.routers
    }
    baselines: dict[str, list[dict[str, float]]] = {}
    flips: list[float] = []
    for fold in folds:
        X = embed(list(fold.truth.prompts))
        for report in evaluate_routers({}, fold.truth):
            baselines.setdefault(report.name, []).append(metric_row(report))
        fixed = {
            s: paired_labels([fold.train], s, "extreme", pairs=pair)
            for s in ("dars", "semantic-entropy")
        }
        draws = [
            paired_labels([fold.train], "single-shot", "extreme", pairs=pair, seed=d)
            for d in range(settings.n_draws)
        ]
        flips.append(_flip_rate(draws))
        for kind in settings.routers:
            for scheme, labels in fixed.items():
                scores = fit_and_score(kind, labels, embed, X, seed=seed)
                per_router[kind][scheme].append(_score(scores, fold.truth))
            per_router[kind]["single-shot"].append(
                [_score(fit_and_score(kind, d, embed, X, seed=seed), fold.truth) for d in draws]
            )
        say(f"{name}: fold done")
    result = StudyResult(
        name=name,
        weak=weak,
        strong=strong,
        protocol=protocol,
        n_test=sum(len(f.truth.query_ids) for f in folds),
        n_train=int(np.mean([len(pair_observations(f.train, weak, strong)) for f in folds])),
        obs_per_pair=float(
            np.mean(
                [
                    len(p.weak) + len(p.strong)
                    for p in pair_observations(folds[0].train, weak, strong)
                ]
            )
            / 2
        ),
        flip_rate=float(np.mean(flips)),
        baselines={k: _fold_mean(v) for k, v in baselines.items()},
    )
    for kind, by_scheme in per_router.items():
        # Single-shot: per draw, the mean over folds; then mean ± std over draws.
        per_draw = [
            _fold_mean([fold[d] for fold in by_scheme["single-shot"]])
            for d in range(settings.n_draws)
        ]
        dars = _fold_mean(by_scheme["dars"])
        result.routers[kind] = {
            "dars": dars,
            "semantic-entropy": _fold_mean(by_scheme["semantic-entropy"]),
            "single-shot": summarise(per_draw),
            "dars_beats_draws": float(np.mean([dars["APGR"] > d["APGR"] for d in per_draw])),
        }
    return result


def _score(scores: FloatArray, truth: Truth) -> dict[str, float]:
    (report,) = evaluate_routers({"router": scores}, truth, baselines=False)
    return metric_row(report)


def _cv_folds(
    rows: Sequence[Observation], weak: str, strong: str, n_folds: int, seed: int
) -> list[Study]:
    truth = truth_from_observations(rows, weak, strong)
    fold_of = np.asarray([query_fold(q, n_folds, seed) for q in truth.query_ids])
    folds = []
    for k in range(n_folds):
        test_ids = {q for q, f in zip(truth.query_ids, fold_of, strict=True) if f == k}
        train = [o for o in rows if o.query_id not in test_ids]
        folds.append(Study(train=train, truth=truth_rows(truth, fold_of == k)))
    return folds


def run(
    data_dir: Path,
    out_dir: Path,
    *,
    settings: Settings = Settings(),
    seed: int = 0,
    embed: Embedder | None = None,
    argv: Sequence[str] = (),
) -> dict[str, Path]:
    """Run every study and write ``dars-vs-single-shot.{md,json,png}`` into ``out_dir``."""
    report = ReportFiles(
        out_dir,
        "dars-vs-single-shot",
        MODULE,
        argv,
        data_dir,
        seeds=f"single-shot draws 0..{settings.n_draws - 1}; router random_state {seed}; "
        f"folds by seeded query hash (seed {seed})",
    )
    embed = embed or make_embedder()
    results: list[StudyResult] = []
    files = [settings.train_file, settings.test_file]

    test_rows = load_rows(data_dir / settings.test_file)
    train_rows = load_rows(data_dir / settings.train_file)
    for weak, strong in settings.transfer_pairs:
        say(f"transfer {weak} -> {strong}")
        study = Study(train=train_rows, truth=truth_from_observations(test_rows, weak, strong))
        results.append(
            run_study(
                f"{weak} vs {strong}",
                "train→test",
                [study],
                weak,
                strong,
                embed,
                settings,
                seed=seed,
            )
        )
    for source in settings.cv_sources:
        rows = [o for o in test_rows if o.meta.get("source") == source.name]
        for weak, strong in source.pairs:
            say(f"cv {source.name}: {weak} -> {strong}")
            folds = _cv_folds(rows, weak, strong, settings.n_folds, seed)
            results.append(
                run_study(
                    f"{source.name}: {weak} vs {strong}",
                    f"{settings.n_folds}-fold CV",
                    folds,
                    weak,
                    strong,
                    embed,
                    settings,
                    seed=seed,
                )
            )
    local_note = "not configured"
    if settings.local_file is not None:
        local = Path(settings.local_file)
        if local.exists():
            rows = load_rows(local)
            weak, strong = choose_pair(rows)
            say(f"cv local: {weak} -> {strong}")
            folds = _cv_folds(rows, weak, strong, settings.n_folds, seed)
            results.append(
                run_study(
                    f"local: {weak} vs {strong}",
                    f"{settings.n_folds}-fold CV",
                    folds,
                    weak,
                    strong,
                    embed,
                    settings,
                    seed=seed,
                )
            )
            local_note = f"run on `{settings.local_file}` ({len(rows)} observations)"
        else:
            local_note = f"`{settings.local_file}` did not exist when this report was made: not run"
    _plot(results, report.png("apgr"))
    body = _body(results, settings, local_note, report.png("apgr").name)
    numbers = {
        "settings": {
            "n_draws": settings.n_draws,
            "n_folds": settings.n_folds,
            "routers": list(settings.routers),
        },
        "local": local_note,
        "studies": [vars(r) for r in results],
    }
    paths = report.write(
        "DARS vs single-shot labels (GSM8K, many observations per pair)", files, body, numbers
    )
    paths["png"] = report.png("apgr")
    return paths


# --------------------------------------------------------------------------- rendering


def _body(results: Sequence[StudyResult], settings: Settings, local_note: str, png: str) -> str:
    lines = [
        "## Setup",
        "",
        "- **train→test**: labels from `gsm8k-train-multi` (1,000 GSM8K train questions, 10 "
        "samples per model at T=0.2), test on the RouterDC rows of `gsm8k-multi` (1,319 GSM8K "
        "test questions, same models, 10 samples). Test truth = mean observed quality.",
        f"- **{settings.n_folds}-fold CV** by query (seeded hash of the query id) inside "
        "`gsm8k-multi` for the prompt-variant sources: MoT-cascade (GPT-4: 4 prompt variants × "
        "(greedy + 3 samples); Llama-2-13B: 2 variants × 24 samples; 400 queries) and Re2 (4 "
        "prompt variants × 1 greedy decode, 1,319 queries). Metrics are averaged over folds.",
        f"- Labels: **DARS** (all observations; λ=0.05, β=0.2, Beta(1,1) prior, "
        f"inverse-variance weights), **single-shot** (one observation per query-model pair, "
        f"{settings.n_draws} seeded draws, mean ± std over draws; a tie means the weak model "
        "is enough), **semantic-entropy** (τ=0.1; meaning classes = extracted final answer "
        "where responses exist, i.e. MoT and Re2; RouterDC has no response text, so its "
        "classes fall back to the 0/1 score).",
        f"- Routers: {', '.join(settings.routers)} with their default parameters, one seed.",
        "- `flip` = share of single-shot training labels (over draws) that contradict the "
        "mean-quality winner of the pair: the label noise DARS removes.",
        f"- Project's own collected data: {local_note}.",
        "",
        "## Results (APGR %, higher is better; CPT % = strong-model calls, lower is better)",
        "",
        "| study | protocol | n test | obs/pair | flip | router | APGR DARS | APGR single-shot | "
        "APGR sem.-entropy | DARS > draws | CPT50 DARS | CPT50 single | CPT80 DARS | "
        "CPT80 single |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for kind, m in r.routers.items():
            ss = m["single-shot"]
            lines.append(
                f"| {r.name} | {r.protocol} | {r.n_test} | {r.obs_per_pair:.1f} | "
                f"{100 * r.flip_rate:.0f}% | {kind} | **{fmt(m['dars']['APGR'])}** | "
                f"{fmt(ss['APGR'])} | {fmt(m['semantic-entropy']['APGR'])} | "
                f"{100 * m['dars_beats_draws']:.0f}% | {fmt(m['dars']['CPT50'])} | "
                f"{fmt(ss['CPT50'])} | {fmt(m['dars']['CPT80'])} | {fmt(ss['CPT80'])} |"
            )
    lines += [
        "",
        "Baselines per study (APGR / CPT50 / CPT80):",
        "",
        "| study | random | prompt-length | oracle |",
        "|---|---|---|---|",
    ]
    for r in results:
        cells = [
            " / ".join(fmt(r.baselines[b][k]) for k in ("APGR", "CPT50", "CPT80"))
            for b in ("random", "prompt-length", "oracle")
        ]
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"![APGR by label scheme]({png})",
        "",
        "## Computed comparisons",
        "",
        *_findings(results),
        "",
    ]
    return "\n".join(lines)


def _findings(results: Sequence[StudyResult]) -> list[str]:
    """Plain statements computed from the table (the prose in the report is added by hand)."""
    out = []
    wins = total = 0
    for r in results:
        for m in r.routers.values():
            total += 1
            wins += m["dars"]["APGR"] > m["single-shot"]["APGR"]["mean"]
    out.append(
        f"- DARS beats the mean single-shot draw on APGR in {wins} of {total} "
        "(study, router) cells."
    )
    for r in results:
        gains = [m["dars"]["APGR"] - m["single-shot"]["APGR"]["mean"] for m in r.routers.values()]
        out.append(
            f"- {r.name} ({r.protocol}): DARS − single-shot APGR per router = "
            + ", ".join(f"{k} {g:+.1f}" for k, g in zip(r.routers, gains, strict=True))
            + f"; oracle APGR {fmt(r.baselines['oracle']['APGR'])}."
        )
    return out


def _plot(results: Sequence[StudyResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    figure, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 3.2 * rows), dpi=110, squeeze=False
    )
    try:
        for ax, r in zip(axes.flat, results, strict=False):
            kinds = list(r.routers)
            x = np.arange(len(kinds))
            ss = [r.routers[k]["single-shot"]["APGR"] for k in kinds]
            ax.bar(x - 0.27, [r.routers[k]["dars"]["APGR"] for k in kinds], 0.27, label="DARS")
            ax.bar(
                x,
                [s["mean"] for s in ss],
                0.27,
                yerr=[s["std"] for s in ss],
                capsize=2,
                label="single-shot (mean ± std)",
            )
            ax.bar(
                x + 0.27,
                [r.routers[k]["semantic-entropy"]["APGR"] for k in kinds],
                0.27,
                label="semantic-entropy",
            )
            ax.axhline(50, color="grey", linewidth=0.8, linestyle="--")
            ax.set_xticks(x, kinds, fontsize=7)
            ax.set_title(f"{r.name}\n({r.protocol})", fontsize=7)
            ax.set_ylabel("APGR %", fontsize=7)
            low = min(40.0, *(r.routers[k]["dars"]["APGR"] for k in kinds))
            ax.set_ylim(low - 2, max(60.0, *(r.routers[k]["dars"]["APGR"] + 5 for k in kinds)))
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=6, loc="lower left")
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    finally:
        plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m router_models.experiments.dars_vs_single_shot``."""
    import sys

    parser = base_parser(__doc__.splitlines()[0], "router_models/reports")
    parser.add_argument("--draws", type=int, default=Settings.n_draws, help="single-shot draws")
    parser.add_argument("--folds", type=int, default=Settings.n_folds, help="CV folds")
    parser.add_argument("--routers", default=",".join(ROUTER_KINDS), help="comma-separated")
    parser.add_argument("--local", default=LOCAL_FILE, help="the project's own observations")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    limit_threads(args.threads)
    settings = Settings(
        routers=tuple(args.routers.split(",")),
        n_draws=args.draws,
        n_folds=args.folds,
        local_file=args.local,
    )
    embed = make_embedder(args.cache_dir)
    paths = run(
        Path(args.data), Path(args.out), settings=settings, seed=args.seed, embed=embed, argv=raw
    )
    for name, path in paths.items():
        say(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
