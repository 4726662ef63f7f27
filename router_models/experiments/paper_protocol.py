"""The Confidence-Driven Router's protocol: train elsewhere, test on RouteLLM's GPT-4 / Mixtral.

Routers are trained on observation data disjoint from the test benchmark and scored on
RouteLLM's released per-query outcomes of ``gpt-4-1106-preview`` (strong) and
``mixtral-8x7b-instruct-v0.1`` (weak) on GSM8K and MMLU, with RouteLLM's contaminated
queries left out, as RouteLLM does. Every router kind is trained with each label scheme.

The training sources have their own models, so labels come from their pairs. Which pairs
(``extreme`` or ``all``, see :mod:`~router_models.experiments.common`) is chosen per router
kind on a validation split of the training queries only (20%, seeded hash), by the mean APGR
over every training model pair on those queries, using DARS labels; the test split is never
looked at before the final scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from router_models.evaluate import (
    RouterReport,
    Truth,
    evaluate_router,
    evaluate_routers,
    plot_curves,
    truth_from_observations,
)
from router_models.experiments.common import (
    PAIR_MAPPINGS,
    ROUTER_KINDS,
    ReportFiles,
    base_parser,
    drop_test_prompts,
    fit_router,
    fmt,
    limit_threads,
    load_rows,
    make_embedder,
    metric_row,
    model_pairs,
    paired_labels,
    predict,
    query_fold,
    say,
    summarise,
)
from router_models.features import Embedder
from router_models.labels import SCHEMES
from router_models.observations import Observation

__all__ = [
    "BENCHMARKS",
    "PAPER_TABLE_1",
    "Benchmark",
    "Settings",
    "TrainSource",
    "main",
    "run",
]

MODULE = "router_models.experiments.paper_protocol"
WEAK = "mixtral-8x7b-instruct-v0.1"
STRONG = "gpt-4-1106-preview"

# Zhang et al. 2025 (arXiv 2502.11021), Table 1: CPT(50%), CPT(80%) per benchmark.
PAPER_TABLE_1: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("Random", (51.29, 78.55, 48.79, 80.16, 50.04, 79.32)),
    ("TO-Router kNN", (59.72, 90.39, 47.93, 79.03, 43.73, 77.74)),
    ("TO-Router MLP", (49.15, 86.67, 51.03, 77.77, 44.01, 77.43)),
    ("RouteLLM SW", (56.08, 78.37, 46.03, 79.58, 47.41, 74.23)),
    ("RouteLLM MF", (55.59, 84.12, 49.07, 80.09, 58.55, 83.68)),
    ("Confidence-Driven SW", (27.31, 55.61, 48.03, 80.41, 37.96, 73.85)),
    ("Confidence-Driven MF", (42.94, 63.53, 41.89, 75.34, 50.06, 78.38)),
    ("Confidence-Driven kNN", (60.84, 81.50, 44.08, 76.32, 42.70, 75.28)),
    ("Confidence-Driven MLP", (35.54, 74.92, 50.04, 79.79, 57.07, 83.27)),
)
_LLMROUTER_BROKEN = ("llama3-chatqa-1.5-8b", "llama3-chatqa-1.5-70b")


@dataclass(frozen=True)
class TrainSource:
    """One training observation file and what is removed from it."""

    file: str
    exclude_flags: tuple[str, ...] = ()
    drop_datasets: tuple[str, ...] = ()
    drop_models: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"`{self.file}`"]
        if self.exclude_flags:
            parts.append(
                "minus rows flagged " + ", ".join(f"`meta.{f}`" for f in self.exclude_flags)
            )
        if self.drop_datasets:
            parts.append("minus datasets " + ", ".join(self.drop_datasets))
        if self.drop_models:
            parts.append("minus models " + ", ".join(self.drop_models))
        return "; ".join(parts)


LLMROUTER = TrainSource(
    "llmrouter.jsonl.gz",
    exclude_flags=("gsm8k_test_overlap", "routellm_mmlu_overlap"),
    drop_models=_LLMROUTER_BROKEN,
)


@dataclass(frozen=True)
class Benchmark:
    """A test file (RouteLLM outcomes), its training sources and its Table 1 column."""

    name: str
    test_file: str
    sources: tuple[TrainSource, ...]
    column: int


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("GSM8K", "routellm-gsm8k.jsonl.gz", (TrainSource("gsm8k-train-multi.jsonl.gz"),), 1),
    Benchmark(
        "MMLU",
        "routellm-mmlu.jsonl.gz",
        (
            LLMROUTER,
            # MMLU is the test benchmark; CMMLU and C-Eval are Chinese (the encoder is English).
            TrainSource("routerdc-other.jsonl.gz", drop_datasets=("mmlu", "cmmlu", "ceval")),
        ),
        2,
    ),
)


@dataclass(frozen=True)
class Settings:
    """What one run covers; the defaults are the committed report's."""

    benchmarks: tuple[Benchmark, ...] = BENCHMARKS
    routers: tuple[str, ...] = ROUTER_KINDS
    schemes: tuple[str, ...] = SCHEMES
    n_draws: int = 5
    validation_folds: int = 5
    min_gap: float = 0.05
    router_params: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "knn": {"max_points": None},
            "sw_ranking": {"max_points": None},
            "mf": {"batch_size": 1024},
        }
    )


@dataclass
class BenchmarkResult:
    """Everything one benchmark contributes to the report."""

    name: str
    column: int
    n_test: int
    n_contaminated: int
    sources: list[dict[str, Any]]
    mapping: dict[str, dict[str, Any]]
    baselines: dict[str, dict[str, float]]
    rows: dict[str, dict[str, Any]]


def _validation_score(
    kind: str,
    sources: Sequence[Sequence[Observation]],
    settings: Settings,
    embed: Embedder,
    seed: int,
) -> dict[str, float]:
    """Mean APGR over every training pair on held-out training queries, per pair mapping."""
    train, val = [], []
    for rows in sources:
        held = {
            o.query_id for o in rows if query_fold(o.query_id, settings.validation_folds, seed) == 0
        }
        train.append([o for o in rows if o.query_id not in held])
        val.append([o for o in rows if o.query_id in held])
    truths: list[Truth] = [
        truth_from_observations(v, w, s)
        for rows, v in zip(sources, val, strict=True)
        if v
        for w, s in model_pairs(rows, "all", settings.min_gap)
    ]
    prompts = list(dict.fromkeys(p for t in truths for p in t.prompts))
    X = embed(prompts)
    out = {}
    for mapping in PAIR_MAPPINGS:
        labels = paired_labels(train, "dars", mapping, min_gap=settings.min_gap)
        estimator = fit_router(
            kind, labels, embed, seed=seed, params=settings.router_params.get(kind)
        )
        by_prompt = dict(zip(prompts, predict(estimator, X), strict=True))
        apgrs = [
            evaluate_router("v", [by_prompt[p] for p in t.prompts], t).apgr * 100 for t in truths
        ]
        finite = [a for a in apgrs if np.isfinite(a)]
        out[mapping] = float(np.mean(finite)) if finite else -np.inf
    return out


def _run_benchmark(
    bench: Benchmark, data_dir: Path, settings: Settings, embed: Embedder, seed: int
) -> tuple[BenchmarkResult, list[RouterReport]]:
    test_all = load_rows(data_dir / bench.test_file)
    test = [o for o in test_all if not o.meta.get("contaminated")]
    truth = truth_from_observations(test, WEAK, STRONG)
    n_contaminated = len({o.query_id for o in test_all}) - len(truth.query_ids)
    all_prompts = {o.prompt for o in test_all}
    sources: list[list[Observation]] = []
    source_info: list[dict[str, Any]] = []
    for src in bench.sources:
        loaded = load_rows(
            data_dir / src.file,
            exclude_flags=src.exclude_flags,
            drop_datasets=src.drop_datasets,
            drop_models=src.drop_models,
        )
        kept, dropped = drop_test_prompts(loaded, all_prompts)
        sources.append(kept)
        source_info.append(
            {
                "source": src.describe(),
                "queries": len({o.query_id for o in kept}),
                "models": len({o.model for o in kept}),
                "dropped_duplicates_of_test": dropped,
            }
        )
    say(f"{bench.name}: {len(truth.query_ids)} test queries, sources {source_info}")
    X = embed(list(truth.prompts))
    baseline_reports = evaluate_routers({}, truth)
    reports = {r.name: r for r in baseline_reports}
    mapping_info: dict[str, dict[str, Any]] = {}
    rows: dict[str, dict[str, Any]] = {}
    curves: list[RouterReport] = [reports["random"], reports["prompt-length"]]
    for kind in settings.routers:
        scores = _validation_score(kind, sources, settings, embed, seed)
        mapping = max(scores, key=lambda m: scores[m])
        params = settings.router_params.get(kind)
        chosen_pairs = [model_pairs(r, mapping, settings.min_gap) for r in sources]
        mapping_info[kind] = {"validation_apgr": scores, "chosen": mapping, "pairs": chosen_pairs}
        say(f"{bench.name} {kind}: validation {scores} -> {mapping}")
        for scheme in settings.schemes:
            n = settings.n_draws if scheme == "single-shot" else 1
            runs = []
            for draw in range(n):
                extra: dict[str, Any] = {"seed": draw} if scheme == "single-shot" else {}
                labels = paired_labels(sources, scheme, mapping, min_gap=settings.min_gap, **extra)
                estimator = fit_router(kind, labels, embed, seed=seed, params=params)
                report = evaluate_router(f"{kind} {scheme}", predict(estimator, X), truth)
                runs.append(metric_row(report))
                if scheme == "dars":
                    curves.append(report)
            rows[f"{kind}/{scheme}"] = {
                "router": kind,
                "scheme": scheme,
                "metrics": summarise(runs) if n > 1 else runs[0],
            }
            say(f"{bench.name} {kind} {scheme}: {rows[f'{kind}/{scheme}']['metrics']}")
    curves.append(reports["oracle"])
    result = BenchmarkResult(
        name=bench.name,
        column=bench.column,
        n_test=len(truth.query_ids),
        n_contaminated=n_contaminated,
        sources=source_info,
        mapping=mapping_info,
        baselines={k: metric_row(r) for k, r in reports.items()},
        rows=rows,
    )
    return result, curves


def run(
    data_dir: Path,
    out_dir: Path,
    *,
    settings: Settings = Settings(),
    seed: int = 0,
    embed: Embedder | None = None,
    argv: Sequence[str] = (),
) -> dict[str, Path]:
    """Run every benchmark and write ``paper-protocol.{md,json}`` and one PNG per benchmark."""
    report = ReportFiles(
        out_dir,
        "paper-protocol",
        MODULE,
        argv,
        data_dir,
        seeds=f"router random_state {seed}; single-shot draws 0..{settings.n_draws - 1}; "
        f"validation split = queries whose seeded hash (seed {seed}) falls in fold 0 of "
        f"{settings.validation_folds}",
    )
    embed = embed or make_embedder()
    results = []
    pngs = {}
    for bench in settings.benchmarks:
        result, curves = _run_benchmark(bench, data_dir, settings, embed, seed)
        results.append(result)
        pngs[bench.name] = plot_curves(
            curves,
            report.png(bench.name.lower()),
            title=f"{bench.name}: {WEAK} -> {STRONG} (DARS labels)",
        )
    files = [b.test_file for b in settings.benchmarks] + list(
        dict.fromkeys(s.file for b in settings.benchmarks for s in b.sources)
    )
    body = _body(results, settings, {k: p.name for k, p in pngs.items()})
    numbers = {"weak": WEAK, "strong": STRONG, "benchmarks": [vars(r) for r in results]}
    paths = report.write("Paper protocol: RouteLLM GPT-4 vs Mixtral outcomes", files, body, numbers)
    paths.update({f"png-{k}": p for k, p in pngs.items()})
    return paths


# --------------------------------------------------------------------------- rendering


def _body(results: Sequence[BenchmarkResult], settings: Settings, pngs: dict[str, str]) -> str:
    lines = [
        "## Protocol",
        "",
        f"- Test pair: weak/edge `{WEAK}`, strong/cloud `{STRONG}`; per-query outcomes "
        "released by RouteLLM (one observation per pair). RouteLLM's contaminated queries "
        "(`meta.contaminated`) are excluded, as RouteLLM does.",
        "- No test query in training: flagged overlaps removed (see sources), all RouterDC "
        "MMLU rows removed, and any training row whose normalised prompt text (NFKC, quotes, "
        "whitespace, case) equals a test prompt is dropped.",
        "- Training sources have other models. Pair mapping, chosen per router kind on a "
        "validation split of the training queries (20%, seeded), by the mean APGR over every "
        f"training model pair with a mean-quality gap ≥ {settings.min_gap}: `extreme` = each "
        "source's weakest vs strongest model; `all` = every such pair, stacked (kNN / MLP "
        "fit the stacked rows, collapsed per query; MF / SW-ranking fit the pairs natively "
        "and score the first source's weakest vs strongest model). The test split is used "
        "only for the final numbers.",
        f"- Label schemes: DARS (λ=0.05, β=0.2), single-shot (mean ± std over "
        f"{settings.n_draws} seeded draws), semantic-entropy (τ=0.1). None of the training "
        "sources has response text, so semantic entropy here is the entropy of the 0/1 "
        "outcomes; where a source has a single observation per pair (llmrouter, most of "
        "routerdc-other) every pair is a tie, and the label says 'weak is enough' everywhere.",
        "- Routers: default parameters, except kNN and SW-ranking keep every training point "
        "(`max_points=None`, no ONNX file is written here) and MF uses batches of 1,024 rows "
        "(the stacked pairs make up to ~100k rows; this keeps a fit under a minute on a CPU).",
        "- Metrics (RouteLLM): CPT(x%) = share of calls to the strong model needed to recover "
        "x% of the weak→strong quality gap (lower is better); APGR = area under the "
        "quality-vs-share curve, as a share of the gap (random = 50, higher is better).",
        "",
    ]
    for r in results:
        lines += [
            f"## {r.name} ({r.n_test} test queries; {r.n_contaminated} contaminated excluded)",
            "",
        ]
        lines.append("Training data:")
        lines.append("")
        for s in r.sources:
            lines.append(
                f"- {s['source']}: {s['queries']} queries, {s['models']} models; "
                f"{s['dropped_duplicates_of_test']} queries dropped as duplicates of test prompts"
            )
        lines += ["", "Pair mapping (validation APGR on held-out training queries):", ""]
        lines.append("| router | extreme | all | chosen | training pairs (weak → strong) |")
        lines.append("|---|---:|---:|---|---|")
        for kind, m in r.mapping.items():
            pairs = "; ".join(f"{w} → {s}" for src in m["pairs"] for w, s in src)
            if len(pairs) > 240:
                pairs = f"{sum(len(src) for src in m['pairs'])} pairs (see JSON)"
            lines.append(
                f"| {kind} | {fmt(m['validation_apgr']['extreme'])} | "
                f"{fmt(m['validation_apgr']['all'])} | {m['chosen']} | {pairs} |"
            )
        lines += [
            "",
            "| router | labels | CPT(50%) | CPT(80%) | APGR |",
            "|---|---|---:|---:|---:|",
        ]
        for name in ("random", "prompt-length"):
            b = r.baselines[name]
            lines.append(
                f"| {name} | – | {fmt(b['CPT50'])} | {fmt(b['CPT80'])} | {fmt(b['APGR'])} |"
            )
        for row in r.rows.values():
            m = row["metrics"]
            lines.append(
                f"| {row['router']} | {row['scheme']} | {fmt(m['CPT50'])} | {fmt(m['CPT80'])} "
                f"| {fmt(m['APGR'])} |"
            )
        o = r.baselines["oracle"]
        lines += [
            f"| oracle | – | {fmt(o['CPT50'])} | {fmt(o['CPT80'])} | {fmt(o['APGR'])} |",
            "",
            f"![{r.name} curves]({pngs[r.name]})",
            "",
        ]
    lines += [
        "## Seed paper, Table 1 (CPT %, as published)",
        "",
        "Zhang et al. 2025, *Leveraging Uncertainty Estimation for Efficient LLM Routing*, "
        "Table 1 (GPT-4 vs Mixtral-8x7B; trained on NQ / TriviaQA / PopQA / MAWPS):",
        "",
        "| routing method | MT-Bench CPT(50%) | MT-Bench CPT(80%) | GSM8K CPT(50%) | "
        "GSM8K CPT(80%) | MMLU CPT(50%) | MMLU CPT(80%) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, values in PAPER_TABLE_1:
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    lines += ["", "## Side by side (CPT50 / CPT80, this run vs Table 1)", ""]
    lines.append(
        "| router | "
        + " | ".join(
            f"{r.name} ours ({s})" for r in results for s in ("DARS", "single-shot", "sem.-entropy")
        )
        + " | "
        + " | ".join(f"{r.name} paper (Conf.-Driven)" for r in results)
        + " |"
    )
    lines.append("|---|" + "---:|" * (4 * len(results)))
    paper = dict(PAPER_TABLE_1)
    for kind, label in (("sw_ranking", "SW"), ("mf", "MF"), ("knn", "kNN"), ("mlp", "MLP")):
        if not all(f"{kind}/dars" in r.rows for r in results):
            continue
        cells = []
        for r in results:
            for scheme in ("dars", "single-shot", "semantic-entropy"):
                cell = r.rows.get(f"{kind}/{scheme}")
                cells.append(
                    "–"
                    if cell is None
                    else f"{fmt(cell['metrics']['CPT50'])} / {fmt(cell['metrics']['CPT80'])}"
                )
        values = paper[f"Confidence-Driven {label}"]
        cells += [f"{values[2 * r.column]:.2f} / {values[2 * r.column + 1]:.2f}" for r in results]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines += ["", "## Computed comparisons", "", *_findings(results), ""]
    return "\n".join(lines)


def _findings(results: Sequence[BenchmarkResult]) -> list[str]:
    """Statements computed from the numbers; the interpretation is in the notes file."""
    out = []
    paper = dict(PAPER_TABLE_1)
    for r in results:
        best_paper = min((v[2 * r.column], name) for name, v in paper.items() if name != "Random")
        ours = [(row["metrics"], key) for key, row in r.rows.items()]

        def mean(m: dict[str, Any], k: str) -> float:
            value = m[k]
            return float(value["mean"] if isinstance(value, dict) else value)

        best = min(ours, key=lambda item: mean(item[0], "CPT50"))
        length = r.baselines["prompt-length"]
        out.append(
            f"- {r.name}: best CPT(50%) here {mean(best[0], 'CPT50'):.1f} ({best[1]}); "
            f"prompt length {length['CPT50']:.1f}; best in Table 1 {best_paper[0]:.2f} "
            f"({best_paper[1]})."
        )
        kinds = sorted({row["router"] for row in r.rows.values()})
        diffs = []
        for kind in kinds:
            dars, single = r.rows.get(f"{kind}/dars"), r.rows.get(f"{kind}/single-shot")
            if dars and single:
                gap = mean(dars["metrics"], "APGR") - mean(single["metrics"], "APGR")
                diffs.append(f"{kind} {gap:+.1f}")
        if diffs:
            out.append(f"- {r.name}: APGR, DARS − single-shot: " + ", ".join(diffs) + ".")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m router_models.experiments.paper_protocol``."""
    import sys

    parser = base_parser(__doc__.splitlines()[0], "router_models/reports")
    parser.add_argument("--draws", type=int, default=Settings.n_draws, help="single-shot draws")
    parser.add_argument("--routers", default=",".join(ROUTER_KINDS), help="comma-separated")
    parser.add_argument("--benchmarks", default="GSM8K,MMLU", help="comma-separated")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    limit_threads(args.threads)
    wanted = set(args.benchmarks.split(","))
    settings = Settings(
        benchmarks=tuple(b for b in BENCHMARKS if b.name in wanted),
        routers=tuple(args.routers.split(",")),
        n_draws=args.draws,
    )
    paths = run(
        Path(args.data),
        Path(args.out),
        settings=settings,
        seed=args.seed,
        embed=make_embedder(args.cache_dir),
        argv=raw,
    )
    for name, path in paths.items():
        say(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
