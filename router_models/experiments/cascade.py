"""The confidence cascade as an evaluated router: ask the edge model k times, escalate when
its answers disagree (issue 12, trainer side).

Per (edge, cloud) pair with several edge responses per query (``gsm8k-multi``'s Re2 and
MoT-cascade sources, the project's own local file), queries are split once by a seeded hash
(one third test). On the train split only: the cascade's sample order, k, clustering,
uncertainty measure and threshold (:mod:`.cascade_eval`), the kNN / MLP routers (DARS labels)
and the hybrid (logistic regression on router scores, entropy and prompt length, fitted on
out-of-fold router scores). On the test split: CPT / APGR of every router (``evaluate.py``),
its cost per query with the k edge samples counted, the deployed cascade at the train
threshold (self-consistency answers), and paired bootstrap intervals of the APGR gaps.

Run: ``python -m router_models.experiments.cascade --data ../shared/data``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router_models.cascade import PriceTable, cascade_cost, router_cost
from router_models.evaluate import (
    Curve,
    RouterReport,
    Truth,
    evaluate_routers,
    prompt_length_scores,
    quality_curve,
    truth_from_observations,
)
from router_models.experiments.cascade_eval import (
    MEASURES,
    CascadeConfig,
    Signals,
    bootstrap_apgr_gap,
    hybrid_scores,
    point_at,
    select_config,
    share_to_reach,
    signals,
)
from router_models.experiments.cascade_report import plot_costs, render
from router_models.experiments.cascade_samples import (
    ORDERS,
    edge_queries,
    embed_samples,
    label_table,
    needs_embeddings,
    order_samples,
    variant_ranking,
)
from router_models.experiments.common import (
    FloatArray,
    ReportFiles,
    base_parser,
    fit_and_score,
    limit_threads,
    load_rows,
    make_embedder,
    paired_labels,
    query_fold,
    say,
    truth_rows,
)
from router_models.features import Embedder
from router_models.labels import choose_pair, pair_observations
from router_models.observations import Observation

__all__ = ["Settings", "StudyResult", "StudySpec", "main", "run", "run_study"]

MODULE = "router_models.experiments.cascade"
LOCAL_FILE = "router_models/data/local-smollm2-qwen05b.jsonl.gz"
MULTI_FILE = "gsm8k-multi.jsonl.gz"
CASCADE_NAMES = ("probe: 3 disagree", "cascade", "hybrid")


@dataclass(frozen=True)
class StudySpec:
    """One (edge, cloud) pair: where its rows are and what the edge samples are."""

    name: str
    file: str
    source: str | None
    weak: str | None
    strong: str | None
    samples: str
    clusterings: tuple[str, ...] = ("auto",)


DEFAULT_STUDIES: tuple[StudySpec, ...] = (
    StudySpec(
        "Re2: gpt-3.5-turbo → gpt-4o-mini",
        MULTI_FILE,
        "re2",
        "gpt-3.5-turbo",
        "gpt-4o-mini-2024-07-18",
        "4 prompt variants × 1 greedy decode",
    ),
    StudySpec(
        "Re2: text-davinci-003 → gpt-4o-mini",
        MULTI_FILE,
        "re2",
        "text-davinci-003",
        "gpt-4o-mini-2024-07-18",
        "4 prompt variants × 1 greedy decode",
    ),
    StudySpec(
        "MoT: llama-2-13b → gpt-4",
        MULTI_FILE,
        "mot-cascade",
        "llama-2-13b",
        "gpt-4",
        "2 prompt variants × 24 sampled decodes",
    ),
    StudySpec(
        "local: smollm2-135m → qwen2.5-coder-0.5b",
        LOCAL_FILE,
        None,
        None,
        None,
        "≤3 rewrites × 3 seeded decodes (T=0.7)",
        ("auto", "embedding@0.9", "embedding@0.8", "text"),
    ),
)


@dataclass(frozen=True)
class Settings:
    """What one run covers; the defaults are the committed report's."""

    studies: tuple[StudySpec, ...] = DEFAULT_STUDIES
    ks: tuple[int, ...] = (2, 3, 4, 5, 6, 8)
    measures: tuple[str, ...] = MEASURES
    routers: tuple[str, ...] = ("knn", "mlp")
    n_folds: int = 3
    level: float = 0.8
    prices: PriceTable = field(default_factory=lambda: PriceTable(edge=0.05, cloud=1.0))
    probe_k: int = 3
    n_bootstrap: int = 1000


@dataclass
class StudyResult:
    """One pair's numbers (JSON-ready) and its cost curves (for the plot only)."""

    name: str
    weak: str
    strong: str
    samples: str
    n_train: int
    n_test: int
    chosen: dict[str, Any]
    rows: list[dict[str, Any]]
    deployed: dict[str, Any]
    gaps: dict[str, list[float]]
    hybrid_coef: dict[str, float]
    curves: dict[str, tuple[FloatArray, FloatArray]] = field(default_factory=dict)

    def numbers(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "curves"}


def _candidates(
    table_lengths: dict[str, float], settings: Settings, clusterings: Sequence[str]
) -> list[CascadeConfig]:
    """Every configuration whose k the order's median query can supply."""
    return [
        CascadeConfig(order, k, clustering, measure)
        for order in ORDERS
        for k in settings.ks
        if k <= table_lengths[order]
        for clustering in clusterings
        for measure in settings.measures
    ]


def _out_of_fold(
    kind: str,
    train_rows: Sequence[Observation],
    train_ids: Sequence[str],
    X: npt.NDArray[np.float32],
    pair: tuple[str, str],
    embed: Embedder,
    seed: int,
) -> FloatArray:
    """Router scores of the train queries, each from a router that did not see it (3 folds):
    the hybrid must learn how much to trust the router on unseen queries."""
    inner = np.asarray([query_fold(q, 3, seed + 1) for q in train_ids])
    scores = np.empty(len(train_ids))
    for f in range(3):
        held = {q for q, g in zip(train_ids, inner, strict=True) if g == f}
        rows = [o for o in train_rows if o.query_id not in held]
        labels = paired_labels([rows], "dars", "extreme", pairs=[[pair]])
        scores[inner == f] = fit_and_score(kind, labels, embed, X[inner == f], seed=seed)
    return scores


def _cost_curve(curve: Curve, k: int, prices: PriceTable) -> FloatArray:
    if k == 0:
        return np.asarray([router_cost(float(s), prices) for s in curve.share])
    return np.asarray([cascade_cost(k, float(s), prices) for s in curve.share])


def _row(report: RouterReport, k: int, prices: PriceTable) -> dict[str, Any]:
    row: dict[str, Any] = {"name": report.name, "k": k}
    row.update({"CPT50": 100 * report.cpt[0.5], "CPT80": 100 * report.cpt[0.8]})
    row["APGR"] = 100 * report.apgr
    for level in (0.5, 0.8):
        share = report.cpt[level]
        cost = router_cost(share, prices) if k == 0 else cascade_cost(k, share, prices)
        row[f"cost{round(100 * level)}"] = math.nan if math.isnan(share) else cost
    return row


def run_study(
    spec: StudySpec,
    rows: Sequence[Observation],
    embed: Embedder,
    settings: Settings,
    *,
    seed: int = 0,
) -> StudyResult:
    """Select on the train split, report every router and the cascade on the test split."""
    weak, strong = choose_pair(rows, spec.weak, spec.strong)
    pairs = pair_observations(rows, weak, strong)
    truth = truth_from_observations(rows, weak, strong)
    queries = edge_queries(pairs)
    is_test = np.asarray([query_fold(q, settings.n_folds, seed) == 0 for q in truth.query_ids])
    train = [int(i) for i in np.flatnonzero(~is_test)]
    test = [int(i) for i in np.flatnonzero(is_test)]
    train_truth, test_truth = truth_rows(truth, ~is_test), truth_rows(truth, is_test)
    vectors = None
    if needs_embeddings(queries, spec.clusterings):
        vectors = embed_samples(queries, embed)
    ranking = variant_ranking([queries[i] for i in train])
    table = label_table(queries, ORDERS, spec.clusterings, vectors, ranking)
    lengths = {
        o: float(np.median([len(order_samples(queries[i], o, ranking)) for i in train]))
        for o in ORDERS
    }
    selection = select_config(
        table,
        _candidates(lengths, settings, spec.clusterings),
        train,
        train_truth,
        settings.prices,
        settings.level,
    )
    config, prices = selection.config, settings.prices
    say(f"{spec.name}: chose {config.describe()}, threshold {selection.point.threshold:.3f}")

    # Routers on the train split (DARS labels), scored on the test split; out-of-fold on train.
    X = np.asarray(embed(list(truth.prompts)), dtype=np.float32)
    train_ids = [truth.query_ids[i] for i in train]
    train_rows = [o for o in rows if o.query_id in set(train_ids)]
    labels = paired_labels([train_rows], "dars", "extreme", pairs=[[(weak, strong)]])
    routers = {
        kind: fit_and_score(kind, labels, embed, X[test], seed=seed) for kind in settings.routers
    }
    oof = {
        kind: _out_of_fold(kind, train_rows, train_ids, X[train], (weak, strong), embed, seed)
        for kind in settings.routers
    }
    sig_train, sig_test = signals(table, config, train), signals(table, config, test)
    probe_order = "decodes" if lengths["decodes"] >= settings.probe_k else "variants"
    probe = CascadeConfig(probe_order, settings.probe_k, "auto", "disagreement")
    probe_scores = (signals(table, probe, test).uncertainty > 0).astype(np.float64)

    def features(split: list[int], scores: dict[str, FloatArray], sig: Signals) -> FloatArray:
        lengths_ = np.log1p(prompt_length_scores([truth.prompts[i] for i in split]))
        return np.column_stack([*scores.values(), sig.uncertainty, lengths_])

    hybrid, coef = hybrid_scores(
        features(train, oof, sig_train),
        train_truth.strong - train_truth.weak,
        features(test, routers, sig_test),
        seed=seed,
    )
    scored = {**routers, CASCADE_NAMES[0]: probe_scores}
    scored.update({CASCADE_NAMES[1]: sig_test.uncertainty, CASCADE_NAMES[2]: hybrid})
    reports = evaluate_routers(scored, test_truth)
    k_of = {CASCADE_NAMES[0]: settings.probe_k, CASCADE_NAMES[1]: config.k}
    k_of[CASCADE_NAMES[2]] = config.k
    result_rows = [_row(r, k_of.get(r.name, 0), prices) for r in reports]
    curves = {
        r.name: (_cost_curve(r.curve, k_of.get(r.name, 0), prices), r.curve.quality)
        for r in reports
    }

    deployed = _deployed(sig_test, test_truth, config.k, selection.point.threshold, prices)
    sc_curve = quality_curve(sig_test.uncertainty, sig_test.keep_quality, test_truth.strong)
    curves["cascade, self-consistency answers"] = (
        _cost_curve(sc_curve, config.k, prices),
        sc_curve.quality,
    )
    length = prompt_length_scores(test_truth.prompts)
    gaps = {
        f"{a} − {b}": list(
            bootstrap_apgr_gap(sa, sb, test_truth, n=settings.n_bootstrap, seed=seed)
        )
        for a, sa, b, sb in (
            ("cascade", sig_test.uncertainty, "prompt-length", length),
            ("hybrid", hybrid, "prompt-length", length),
            ("cascade", sig_test.uncertainty, "probe", probe_scores),
            ("hybrid", hybrid, "cascade", sig_test.uncertainty),
        )
    }
    return StudyResult(
        name=spec.name,
        weak=weak,
        strong=strong,
        samples=spec.samples,
        n_train=len(train),
        n_test=len(test),
        chosen={
            "config": config.describe(),
            "threshold": selection.point.threshold,
            "train_target_quality": 100 * selection.target,
            "train_share": 100 * selection.point.share,
            "train_quality": 100 * selection.point.quality,
            "train_cost": selection.point.cost,
            "candidates": len(selection.candidates),
            "probe": probe.describe(),
            "variant_ranking": ranking,
        },
        rows=result_rows,
        deployed=deployed,
        gaps=gaps,
        hybrid_coef=dict(
            zip([*settings.routers, config.measure, "log length"], coef.tolist(), strict=True)
        ),
        curves=curves,
    )


def _deployed(
    sig: Signals, truth: Truth, k: int, threshold: float, prices: PriceTable
) -> dict[str, Any]:
    """The cascade as it would run: train threshold, self-consistency answers, k samples paid."""
    point = point_at(sig, truth.strong, threshold, k, prices)
    q_weak, q_strong = float(truth.weak.mean()), float(truth.strong.mean())
    sc_curve = quality_curve(sig.uncertainty, sig.keep_quality, truth.strong)
    out: dict[str, Any] = {
        "edge_quality": 100 * q_weak,
        "cloud_quality": 100 * q_strong,
        "self_consistency_quality": 100 * float(sig.keep_quality.mean()),
        "mean_k": float(sig.k_used.mean()),
        "share": 100 * point.share,
        "quality": 100 * point.quality,
        "cost": point.cost,
        "gap_recovered": 100 * (point.quality - q_weak) / (q_strong - q_weak)
        if q_strong > q_weak
        else math.nan,
    }
    for level in (0.5, 0.8):
        share = share_to_reach(sc_curve, q_weak + level * (q_strong - q_weak))
        out[f"CPT{round(100 * level)}"] = 100 * share
        out[f"cost{round(100 * level)}"] = (
            math.nan if math.isnan(share) else cascade_cost(k, share, prices)
        )
    return out


def _study_rows(
    spec: StudySpec, data_dir: Path, cache: dict[str, list[Observation]]
) -> list[Observation]:
    path = Path(spec.file) if "/" in spec.file else data_dir / spec.file
    if str(path) not in cache:
        cache[str(path)] = load_rows(path)
    rows = cache[str(path)]
    if spec.source is not None:
        rows = [o for o in rows if o.meta.get("source") == spec.source]
    return rows


def run(
    data_dir: Path,
    out_dir: Path,
    *,
    settings: Settings = Settings(),
    seed: int = 0,
    embed: Embedder | None = None,
    argv: Sequence[str] = (),
) -> dict[str, Path]:
    """Run every study and write ``cascade.{md,json}`` and ``cascade-cost.png``."""
    report = ReportFiles(
        out_dir,
        "cascade",
        MODULE,
        argv,
        data_dir,
        seeds=f"train/test split by seeded query hash (seed {seed}, test = fold 0 of "
        f"{settings.n_folds}); router random_state {seed}; bootstrap seed {seed}",
    )
    embed = embed or make_embedder()
    cache: dict[str, list[Observation]] = {}
    results = []
    skipped = []
    for spec in settings.studies:
        path = Path(spec.file) if "/" in spec.file else data_dir / spec.file
        if not path.exists():
            skipped.append(f"{spec.name}: `{spec.file}` not found")
            continue
        say(f"study {spec.name}")
        results.append(
            run_study(spec, _study_rows(spec, data_dir, cache), embed, settings, seed=seed)
        )
    png = report.png("cost")
    plot_costs(results, png, settings.prices)
    body = render(results, settings, png.name, skipped)
    numbers = {
        "settings": {
            "prices": vars(settings.prices),
            "ks": list(settings.ks),
            "measures": list(settings.measures),
            "routers": list(settings.routers),
            "level": settings.level,
            "n_folds": settings.n_folds,
        },
        "skipped": skipped,
        "studies": [r.numbers() for r in results],
    }
    files = sorted({s.file for s in settings.studies if "/" not in s.file})
    paths = report.write(
        "Confidence cascade vs routers: quality, cloud calls and cost", files, body, numbers
    )
    paths["png"] = png
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m router_models.experiments.cascade``."""
    import sys

    parser = base_parser(__doc__.splitlines()[0], "router_models/reports")
    parser.add_argument("--edge-cost", type=float, default=0.05, help="price of one edge call")
    parser.add_argument("--cloud-cost", type=float, default=1.0, help="price of one cloud call")
    parser.add_argument("--local", default=LOCAL_FILE, help="the project's own observations")
    parser.add_argument("--bootstrap", type=int, default=Settings.n_bootstrap, help="resamples")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    limit_threads(args.threads)
    studies = tuple(
        StudySpec(**{**vars(s), "file": args.local}) if s.file == LOCAL_FILE else s
        for s in DEFAULT_STUDIES
    )
    settings = Settings(
        studies=studies,
        prices=PriceTable(edge=args.edge_cost, cloud=args.cloud_cost),
        n_bootstrap=args.bootstrap,
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
