"""N-way routing on real data: K-model quality routers against the best two-model router.

For every study (one observation file, a model subset, an optional per-dataset cap on
queries), queries are split by a seeded hash of their id into train / validation / test
(test first, then validation out of the rest). Training rows whose normalised prompt equals
a test prompt are dropped. Each quality router kind (kNN, MF, MLP; ``registry.QUALITY_ROUTERS``)
picks its hyper-parameters from a small grid by AIQ on the validation part, is refitted on
train + validation, and is evaluated once on test:

- **N-way**: all K models of the study, routed by ``argmax q_hat - lambda * c``;
- **two-model view**: the cheapest model (by price; the better one among equally cheap) and
  the model with the best training quality, routed by the same rule with a router of the same
  kind fitted on those two columns only;
- baselines: single models, random mixtures, the oracle of both views.

The router kind reported as "N-way" / "two-model" is the one with the best validation AIQ
(never the test AIQ). The whole protocol repeats for ``n_splits`` split seeds; the tables
show the first split, the verdict counts every split.

Labels are DARS cells (all observations: mean, spread, count; weights from counts); where
cells hold several observations, single-shot labels (one seeded draw per cell, ``n_draws``
draws) train the selected N-way router too. Test truth is always the mean
of all observations of a cell; only queries where every model of the study answered count.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router_models.evaluate_multi import (
    Curve,
    MultiReport,
    aiq,
    bootstrap_aiq_difference,
    curve_of,
    decisions,
    evaluate_curve,
    mixture_curve,
    single_model_points,
)
from router_models.experiments.common import (
    FloatArray,
    ReportFiles,
    base_parser,
    drop_test_prompts,
    limit_threads,
    load_rows,
    make_embedder,
    say,
)
from router_models.features import Embedder
from router_models.labels import QualityLabels, quality_labels
from router_models.observations import Observation
from router_models.prices import query_costs
from router_models.registry import make_router
from router_models.splits import held_out

__all__ = [
    "GRIDS",
    "STUDIES",
    "Comparison",
    "Settings",
    "Study",
    "StudyResult",
    "main",
    "run",
    "run_study",
    "subsample_queries",
]

MODULE = "router_models.experiments.n_way"
_PREDICT_CHUNK = 2048

GRIDS: dict[str, tuple[dict[str, Any], ...]] = {
    "knn_quality": ({"n_neighbors": 10}, {"n_neighbors": 40, "weights": "similarity"}),
    "mf_quality": ({"n_factors": 16, "alpha": 1e-5}, {"n_factors": 64, "alpha": 1e-4}),
    "mlp_quality": (
        {"hidden_layer_sizes": (128, 64), "alpha": 1e-4},
        {"hidden_layer_sizes": (64, 32), "alpha": 1e-3},
    ),
}


@dataclass(frozen=True)
class Study:
    """One observation file, the models routed among, and how many queries to keep."""

    name: str
    file: str
    models: tuple[str, ...] | None = None
    per_dataset_cap: int | None = None
    label_meaning: str = "mean observed score (1 = correct)"


STUDIES: tuple[Study, ...] = (
    Study("llmrouter", "llmrouter.jsonl.gz"),
    Study("routerdc-other", "routerdc-other.jsonl.gz", per_dataset_cap=800),
    Study("gsm8k-train-multi", "gsm8k-train-multi.jsonl.gz"),
    Study(
        "alpacaeval",
        "alpacaeval.jsonl.gz",
        models=(
            "fusechat-llama-3.2-1b-instruct",
            "gemma-2b-it",
            "fusechat-llama-3.2-3b-instruct",
            "fusechat-gemma-2-9b-instruct",
            "claude-instant-1.2",
            "gpt-3.5-turbo-1106",
            "claude-2.1",
            "gpt4_1106_preview",
        ),
        label_meaning=(
            "probability that the GPT-4-Turbo judge prefers the model's answer to the "
            "reference answer of gpt4_1106_preview (AlpacaEval 2.0 raw win rate per query); "
            "gpt4_1106_preview itself is a constant 0.5 (a tie with itself)"
        ),
    ),
)


@dataclass(frozen=True)
class Settings:
    """The protocol's knobs (defaults: the committed report)."""

    studies: tuple[Study, ...] = STUDIES
    grids: Mapping[str, tuple[dict[str, Any], ...]] = field(default_factory=lambda: GRIDS)
    test_fraction: float = 0.2
    validation_fraction: float = 0.2
    n_draws: int = 3
    n_boot: int = 500
    n_splits: int = 3


@dataclass(frozen=True)
class Comparison:
    """AIQ(N-way) - AIQ(two-model) of the validation-selected routers, with a 95% interval."""

    n_way: str
    two_model: str
    diff: float
    low: float
    high: float


@dataclass
class StudyResult:
    """Everything the report shows for one study."""

    study: Study
    models: tuple[str, ...]
    pair: tuple[str, str]
    n_queries: dict[str, int]
    multi_sample: bool
    singles: Curve
    decision_cost: FloatArray
    reports: dict[str, MultiReport] = field(default_factory=dict)
    chosen: dict[str, dict[str, Any]] = field(default_factory=dict)
    validation_aiq: dict[str, float] = field(default_factory=dict)
    comparison: Comparison | None = None
    single_shot_router: str = ""
    single_shot_aiq: list[float] = field(default_factory=list)
    dars_uniform_aiq: float = float("nan")
    # One entry per split seed (the first is this result's own split).
    split_comparisons: list[Comparison] = field(default_factory=list)
    # Per split: test AIQ with DARS (count weights), DARS (uniform weights), single-shot (mean).
    split_single_shot: list[tuple[float, float, float]] = field(default_factory=list)


# --------------------------------------------------------------------------- data


def _order_key(seed: int, query_id: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0subsample\0{query_id}".encode(), digest_size=8).digest()


def subsample_queries(
    rows: Sequence[Observation], per_dataset_cap: int | None, seed: int
) -> list[Observation]:
    """At most ``per_dataset_cap`` queries per dataset, chosen by a seeded hash of the id."""
    if per_dataset_cap is None:
        return list(rows)
    by_dataset: dict[str, set[str]] = defaultdict(set)
    for obs in rows:
        by_dataset[obs.dataset].add(obs.query_id)
    keep: set[str] = set()
    for ids in by_dataset.values():
        keep.update(sorted(ids, key=lambda q: _order_key(seed, q))[:per_dataset_cap])
    return [obs for obs in rows if obs.query_id in keep]


def _split(
    rows: Sequence[Observation], settings: Settings, seed: int
) -> tuple[list[Observation], list[Observation], list[Observation]]:
    """(train, validation, test) by query; train and validation lose test-prompt duplicates."""
    test = [o for o in rows if held_out(o.query_id, settings.test_fraction, seed)]
    rest = [o for o in rows if not held_out(o.query_id, settings.test_fraction, seed)]
    rest, _ = drop_test_prompts(rest, {o.prompt for o in test})
    val = [o for o in rest if held_out(o.query_id, settings.validation_fraction, seed + 1)]
    train = [o for o in rest if not held_out(o.query_id, settings.validation_fraction, seed + 1)]
    return train, val, test


def _complete(labels: QualityLabels) -> QualityLabels:
    return labels.take(np.flatnonzero(labels.complete()))


def _costs(labels: QualityLabels) -> FloatArray:
    return query_costs(labels.prompts, labels.response_chars, labels.models)


# --------------------------------------------------------------------------- fitting


def _fit(
    kind: str,
    params: Mapping[str, Any],
    X: npt.NDArray[np.float32],
    labels: QualityLabels,
    columns: Sequence[int],
    seed: int,
    *,
    count_weights: bool = True,
) -> Any:
    """A quality router on ``columns`` of the labels (rows without any such cell dropped).

    Cells weigh by their observation count, or all the same with ``count_weights=False``.
    """
    cols = list(columns)
    all_cells = labels.cell_weights() if count_weights else labels.mask.astype(np.float64)
    weight = all_cells[:, cols]
    keep = weight.sum(axis=1) > 0
    estimator = make_router(kind, random_state=seed, **params)
    return estimator.fit(X[keep], labels.mean[keep][:, cols], sample_weight=weight[keep])


def _predict(estimator: Any, X: npt.NDArray[np.float32]) -> FloatArray:
    parts = [
        np.asarray(estimator.predict(X[i : i + _PREDICT_CHUNK]), dtype=np.float64)
        for i in range(0, len(X), _PREDICT_CHUNK)
    ]
    return np.concatenate(parts).reshape(len(X), -1)


def _aiq_of(
    q_hat: FloatArray, truth: QualityLabels, columns: Sequence[int], cost: FloatArray
) -> float:
    """AIQ of routing ``q_hat`` among ``columns``, over the range of all K single models."""
    cols = list(columns)
    true_cost = _costs(truth)
    singles = single_model_points(truth.mean, true_cost)
    choices = decisions(q_hat, cost[cols])
    curve = curve_of(choices, truth.mean[:, cols], true_cost[:, cols])
    return aiq(curve, float(singles.cost.min()), float(singles.cost.max()))


# --------------------------------------------------------------------------- one study


@dataclass(frozen=True)
class _Data:
    train: QualityLabels
    val: QualityLabels
    trainval: QualityLabels
    test: QualityLabels
    X_train: npt.NDArray[np.float32]
    X_val: npt.NDArray[np.float32]
    X_trainval: npt.NDArray[np.float32]
    X_test: npt.NDArray[np.float32]


def _prepare(
    rows: Sequence[Observation],
    models: tuple[str, ...],
    settings: Settings,
    seed: int,
    embed: Embedder,
) -> tuple[_Data, list[Observation]]:
    train_rows, val_rows, test_rows = _split(rows, settings, seed)
    train = quality_labels(train_rows, models)
    val = _complete(quality_labels(val_rows, models))
    trainval = quality_labels([*train_rows, *val_rows], models)
    test = _complete(quality_labels(test_rows, models))
    data = _Data(
        train=train,
        val=val,
        trainval=trainval,
        test=test,
        X_train=embed(list(train.prompts)),
        X_val=embed(list(val.prompts)),
        X_trainval=embed(list(trainval.prompts)),
        X_test=embed(list(test.prompts)),
    )
    return data, [*train_rows, *val_rows]


def _two_model_pair(train: QualityLabels, cost: FloatArray) -> tuple[int, int]:
    """(cheapest, best): lowest price (better training quality breaks ties), best quality."""
    quality = np.nanmean(train.mean, axis=0)
    cheapest = int(min(range(len(cost)), key=lambda k: (cost[k], -quality[k])))
    best = int(np.argmax(quality))
    if best == cheapest:
        best = int(np.argsort(quality)[-2])
    return cheapest, best


def _select(
    kind: str,
    grids: Mapping[str, tuple[dict[str, Any], ...]],
    data: _Data,
    columns: Sequence[int],
    cost: FloatArray,
    seed: int,
) -> tuple[dict[str, Any], float]:
    """The grid entry of ``kind`` with the best validation AIQ (train fit, validation score)."""
    scored = []
    for params in grids[kind]:
        est = _fit(kind, params, data.X_train, data.train, columns, seed)
        scored.append((_aiq_of(_predict(est, data.X_val), data.val, columns, cost), params))
    best_aiq, best_params = max(scored, key=lambda item: item[0])
    return dict(best_params), float(best_aiq)


def run_study(
    study: Study, rows: Sequence[Observation], embed: Embedder, settings: Settings, seed: int
) -> StudyResult:
    """Select, fit and evaluate every router kind of one study (see the module docstring)."""
    models = study.models or tuple(sorted({str(o.model) for o in rows}))
    data, trainval_rows = _prepare(rows, models, settings, seed, embed)
    cost = _costs(data.train).mean(axis=0)
    cheapest, best = _two_model_pair(data.train, cost)
    views = {"N-way": list(range(len(models))), "two-model": [cheapest, best]}
    truth, true_cost = data.test.mean, _costs(data.test)
    singles = single_model_points(truth, true_cost)
    result = StudyResult(
        study=study,
        models=models,
        pair=(models[cheapest], models[best]),
        n_queries={"train": len(data.train), "validation": len(data.val), "test": len(data.test)},
        multi_sample=bool(np.any(data.trainval.count > 1)),
        singles=singles,
        decision_cost=cost,
    )
    choices: dict[str, npt.NDArray[np.intp]] = {}
    for view, cols in views.items():
        for kind in settings.grids:
            params, val_aiq = _select(kind, settings.grids, data, cols, cost, seed)
            est = _fit(kind, params, data.X_trainval, data.trainval, cols, seed)
            name = f"{view} {kind}"
            choices[name] = decisions(_predict(est, data.X_test), cost[cols])
            curve = curve_of(choices[name], truth[:, cols], true_cost[:, cols])
            result.reports[name] = evaluate_curve(name, curve, singles)
            result.chosen[name] = params
            result.validation_aiq[name] = val_aiq
            say(f"{study.name}: {name} {params} val AIQ {val_aiq:.4f}")
        for label, q in (("oracle", truth), ("random mixtures", None)):
            name = f"{view} {label}"
            if q is None:
                sub = single_model_points(truth[:, cols], true_cost[:, cols])
                result.reports[name] = evaluate_curve(name, mixture_curve(sub), singles)
            else:
                choices[name] = decisions(q[:, cols], cost[cols])
                oracle = curve_of(choices[name], truth[:, cols], true_cost[:, cols])
                result.reports[name] = evaluate_curve(name, oracle, singles)
    _compare(result, choices, views, truth, true_cost, settings, seed)
    if result.multi_sample:
        _single_shot(result, data, trainval_rows, models, settings, seed)
    return result


def _selected(result: StudyResult, view: str) -> str:
    names = [n for n in result.validation_aiq if n.startswith(f"{view} ")]
    return max(names, key=lambda n: result.validation_aiq[n])


def _compare(
    result: StudyResult,
    choices: Mapping[str, npt.NDArray[np.intp]],
    views: Mapping[str, Sequence[int]],
    truth: FloatArray,
    true_cost: FloatArray,
    settings: Settings,
    seed: int,
) -> None:
    """Paired bootstrap of AIQ(N-way) - AIQ(two-model), both validation-selected."""
    n_way, two = _selected(result, "N-way"), _selected(result, "two-model")
    pair = list(views["two-model"])
    # Map the two-model decisions (column 0/1) back to the K columns of the study.
    two_choices = np.asarray(pair)[choices[two]]
    diff, low, high = bootstrap_aiq_difference(
        choices[n_way], two_choices, truth, true_cost, n_boot=settings.n_boot, seed=seed
    )
    result.comparison = Comparison(n_way, two, diff, low, high)


def _single_shot(
    result: StudyResult,
    data: _Data,
    trainval_rows: Sequence[Observation],
    models: tuple[str, ...],
    settings: Settings,
    seed: int,
) -> None:
    """Test AIQ of the selected N-way kind on single-shot draws and on DARS cells with
    uniform weights (same parameters): separates the label from the count weighting."""
    name = _selected(result, "N-way")
    kind = name.split(" ", 1)[1]
    cols = list(range(len(models)))
    truth, true_cost = data.test.mean, _costs(data.test)
    singles = single_model_points(truth, true_cost)
    c_min, c_max = float(singles.cost.min()), float(singles.cost.max())
    result.single_shot_router = name

    def test_aiq(estimator: Any) -> float:
        q_hat = _predict(estimator, data.X_test)
        curve = curve_of(decisions(q_hat, result.decision_cost), truth, true_cost)
        return aiq(curve, c_min, c_max)

    params = result.chosen[name]
    uniform = _fit(kind, params, data.X_trainval, data.trainval, cols, seed, count_weights=False)
    result.dars_uniform_aiq = test_aiq(uniform)
    for draw in range(settings.n_draws):
        labels = quality_labels(trainval_rows, models, scheme="single-shot", seed=draw)
        est = _fit(kind, params, embed_rows(data, labels), labels, cols, seed)
        result.single_shot_aiq.append(test_aiq(est))


def embed_rows(data: _Data, labels: QualityLabels) -> npt.NDArray[np.float32]:
    """The train + validation embeddings in the order of ``labels`` (same queries)."""
    position = {q: i for i, q in enumerate(data.trainval.query_ids)}
    return data.X_trainval[[position[q] for q in labels.query_ids]]


# --------------------------------------------------------------------------- driver


def run(
    data_dir: Path,
    out_dir: Path,
    *,
    settings: Settings = Settings(),
    seed: int = 0,
    embed: Embedder | None = None,
    argv: Sequence[str] = (),
) -> dict[str, Path]:
    """Run every study and write ``n-way.{md,json}`` and ``n-way-curves.png`` into ``out_dir``."""
    from router_models.experiments.n_way_report import render

    report = ReportFiles(
        out_dir,
        "n-way",
        MODULE,
        argv,
        data_dir,
        seeds=f"split, router and bootstrap seeds {seed}..{seed + settings.n_splits - 1} "
        f"(one per split; tables show split {seed}); single-shot draws "
        f"0..{settings.n_draws - 1}; query subsample seed {seed}",
    )
    embed = embed or make_embedder()
    results = []
    for study in settings.studies:
        say(f"{study.name}: loading {study.file}")
        rows = load_rows(data_dir / study.file, models=study.models)
        rows = subsample_queries(rows, study.per_dataset_cap, seed)
        splits = [
            run_study(study, rows, embed, settings, seed + s) for s in range(settings.n_splits)
        ]
        first = splits[0]
        first.split_comparisons = [r.comparison for r in splits if r.comparison is not None]
        first.split_single_shot = [
            (
                r.reports[r.single_shot_router].aiq,
                r.dars_uniform_aiq,
                float(np.mean(r.single_shot_aiq)),
            )
            for r in splits
            if r.single_shot_aiq
        ]
        results.append(first)
    return render(report, results, settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m router_models.experiments.n_way``."""
    import sys

    parser = base_parser(__doc__.splitlines()[0], "router_models/reports")
    parser.add_argument("--draws", type=int, default=Settings.n_draws, help="single-shot draws")
    parser.add_argument("--splits", type=int, default=Settings.n_splits, help="split seeds")
    parser.add_argument("--only", help="comma-separated study names (default: all)")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    limit_threads(args.threads)
    studies = STUDIES
    if args.only:
        wanted = set(args.only.split(","))
        studies = tuple(s for s in STUDIES if s.name in wanted)
    settings = Settings(studies=studies, n_draws=args.draws, n_splits=args.splits)
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
