"""Learning curve of the live loop: replay real outcome data as traffic, retrain, gate, promote.

A data set with many observations per query-model pair stands in for live traffic and its
recorded scores for the judge. Per source:

1. **Test slice**, fixed before any replay and never used by training or by the gate: a
   seeded hash fold of the query ids. On GSM8K it is exactly the bundled router's own held-out
   fold (``pretrain``: fold 0 of 5, seed 0), so the starting point is not in-sample.
2. **Replay**: the other queries arrive in a seeded random order. After ``n`` of them
   (checkpoints 25, 50, 100, ...), the loop has seen every observation of those queries
   (**DARS** arm) or one drawn observation per query-model pair (**single-shot** arm).
3. **Retrain**: a registry estimator is fitted on the labels of the seen queries minus the
   gate's share (DARS: ``labels/dars.py`` on all samples; single-shot: ``labels/single_shot.py``).
4. **Gate** (:mod:`router_models.promotion`): candidate vs serving router (at first the bundled
   ``default.onnx``) on the seen queries held out from training, with the arm's own observations
   as truth; promote only when APGR is higher by the margin.
5. **Measure** the promoted (serving) router and the candidate on the test slice, with truth =
   every observation of each test query.

Seeds change the replay order, the single-shot draw and the estimator's random state; the
two arms of one seed see the same queries in the same order (a paired comparison).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from router_models.evaluate import Truth, evaluate_router, evaluate_routers, truth_from_observations
from router_models.experiments.common import (
    FloatArray,
    ReportFiles,
    base_parser,
    fit_router,
    limit_threads,
    load_rows,
    make_embedder,
    metric_row,
    say,
    truth_rows,
)
from router_models.features import Embedder
from router_models.labels import LabelSet, choose_pair, dars_labels, single_shot_labels
from router_models.observations import Observation, group_by_query
from router_models.promotion import GatePolicy, RouterLike, gate, router_scores
from router_models.splits import held_out, query_fold

__all__ = [
    "SCHEMES",
    "Arm",
    "Point",
    "Settings",
    "Source",
    "SourceResult",
    "main",
    "one_sample",
    "replay",
    "run",
    "run_source",
]

MODULE = "router_models.experiments.learning_curve"
SCHEMES: tuple[str, ...] = ("dars", "single-shot")
START_ROUTER = "router_models/pretrained/default.onnx"
LOCAL_FILE = "router_models/data/local-smollm2-qwen05b.jsonl.gz"


@dataclass(frozen=True)
class Source:
    """One replayed data set: file (in the data directory, or a path that exists as given),
    optional dataset / ``meta.source`` filters, the (weak, strong) pair (None: by mean
    quality) and the test slice, fold 0 of ``test_folds`` by seeded query hash."""

    name: str
    file: str
    datasets: tuple[str, ...] | None = None
    meta_source: str | None = None
    weak: str | None = None
    strong: str | None = None
    test_folds: int = 3


DEFAULT_SOURCES: tuple[Source, ...] = (
    Source(
        "gsm8k-multi (RouterDC, 10 samples)",
        "gsm8k-multi.jsonl.gz",
        meta_source="routerdc",
        weak="mistral-7b-v0.1",
        strong="metamath-mistral-7b",
        test_folds=5,
    ),
    Source(
        "routerdc-other (HumanEval, HumanEval-JS, MBPP; 10 samples)",
        "routerdc-other.jsonl.gz",
        datasets=("humaneval", "humaneval-js", "mbpp"),
    ),
    Source("local (SmolLM2 vs Qwen2.5-0.5B)", LOCAL_FILE),
)


@dataclass(frozen=True)
class Settings:
    """What one run covers; the defaults are the committed report's (set before it ran)."""

    sources: tuple[Source, ...] = DEFAULT_SOURCES
    checkpoints: tuple[int, ...] = (25, 50, 100, 200, 400, 800)
    n_seeds: int = 10
    routers: tuple[str, ...] = ("knn", "mlp")
    gate_fraction: float = 0.25
    margin: float = 2.0
    min_gate_queries: int = 20
    start_router: str = START_ROUTER
    split_seed: int = 0


@dataclass(frozen=True)
class Point:
    """One checkpoint of one replay: test APGR (percent) of the candidate and of the router
    serving after the gate's verdict."""

    n: int
    n_train: int
    n_gate: int
    candidate_apgr: float
    promoted_apgr: float
    verdict: str
    reason: str


@dataclass(frozen=True)
class Arm:
    """The observations one arm's loop sees, grouped by query id."""

    scheme: str
    by_query: dict[str, list[Observation]]

    def rows(self, query_ids: Sequence[str]) -> list[Observation]:
        return [o for q in query_ids for o in self.by_query[q]]


@dataclass
class SourceResult:
    """Everything measured on one source; ``curves[router][scheme]`` = one list of points per
    seed."""

    name: str
    weak: str
    strong: str
    n_pool: int
    n_test: int
    obs_per_pair: float
    checkpoints: list[int]
    baselines: dict[str, dict[str, float]]
    start_apgr: float
    curves: dict[str, dict[str, list[list[Point]]]] = field(default_factory=dict)


# --------------------------------------------------------------------------- replay


def one_sample(rows: Sequence[Observation], seed: int) -> list[Observation]:
    """One observation per (query, model), drawn by a seeded hash of (query, model): what a
    loop that samples each model once would have seen."""
    groups: dict[tuple[str, str], list[Observation]] = {}
    for obs in rows:
        groups.setdefault((obs.query_id, str(obs.model)), []).append(obs)
    drawn = []
    for (query, model), group in groups.items():
        group.sort(key=lambda o: (o.variant_id, o.sample_id))  # the draw ignores file order
        drawn.append(group[query_fold(f"{query}\0{model}", len(group), seed)])
    return drawn


def _labels(arm: Arm, query_ids: Sequence[str], weak: str, strong: str, seed: int) -> LabelSet:
    rows = arm.rows(query_ids)
    if arm.scheme == "dars":
        return dars_labels(rows, weak, strong)
    return single_shot_labels(rows, weak, strong, seed=seed)


@dataclass(frozen=True)
class _Stage:
    """What every replay of one source shares: the pool, embeddings and the test slice."""

    pool: tuple[str, ...]
    row_of: dict[str, int]
    X: FloatArray
    test: Truth
    X_test: FloatArray
    weak: str
    strong: str


def _test_apgr(router: RouterLike, stage: _Stage) -> float:
    scores = router_scores(router, stage.X_test, stage.test.prompts)
    return 100 * evaluate_router("r", scores, stage.test).apgr


def replay(
    stage: _Stage,
    arm: Arm,
    kind: str,
    embed: Embedder,
    settings: Settings,
    *,
    seed: int,
    start: RouterLike,
    start_apgr: float,
) -> list[Point]:
    """One seeded replay of one arm: retrain, gate and measure at every checkpoint."""
    order = [stage.pool[i] for i in np.random.default_rng(seed).permutation(len(stage.pool))]
    policy = GatePolicy(margin=settings.margin, min_queries=settings.min_gate_queries)
    serving, serving_apgr = start, start_apgr
    points = []
    for n in _checkpoints(settings.checkpoints, len(order)):
        seen = order[:n]
        gate_ids = [q for q in seen if held_out(q, settings.gate_fraction, settings.split_seed + 1)]
        gate_set = set(gate_ids)
        train_ids = [q for q in seen if q not in gate_set]
        labels = _labels(arm, train_ids, stage.weak, stage.strong, seed)
        candidate = fit_router(kind, labels, embed, seed=seed)
        candidate_apgr = _test_apgr(candidate, stage)
        verdict, reason = "refuse", "no-gate-queries"
        if gate_ids:
            truth = truth_from_observations(arm.rows(gate_ids), stage.weak, stage.strong)
            X_gate = stage.X[[stage.row_of[q] for q in truth.query_ids]]
            decision = gate(serving, candidate, truth, X_gate, policy=policy, trained_on=train_ids)
            verdict, reason = decision.verdict, decision.reason
            if decision.promote:
                serving, serving_apgr = candidate, candidate_apgr
        points.append(
            Point(n, len(train_ids), len(gate_ids), candidate_apgr, serving_apgr, verdict, reason)
        )
    return points


def _checkpoints(wanted: Sequence[int], available: int) -> list[int]:
    """The wanted checkpoints that the pool can fill, plus the whole pool as the last one."""
    points = [n for n in wanted if n < available]
    return [*points, available]


# --------------------------------------------------------------------------- sources


def _source_rows(source: Source, data_dir: Path) -> list[Observation]:
    path = Path(source.file) if Path(source.file).exists() else data_dir / source.file
    rows = load_rows(path)
    if source.datasets is not None:
        rows = [o for o in rows if o.dataset in source.datasets]
    if source.meta_source is not None:
        rows = [o for o in rows if o.meta.get("source") == source.meta_source]
    return rows


def run_source(
    source: Source, data_dir: Path, embed: Embedder, settings: Settings, *, seed: int = 0
) -> SourceResult:
    """Every router kind, arm and seed on one source."""
    rows = _source_rows(source, data_dir)
    weak, strong = choose_pair(rows, source.weak, source.strong)
    rows = [o for o in rows if o.model in (weak, strong)]
    truth = truth_from_observations(rows, weak, strong)  # queries both models answered
    is_test = np.asarray(
        [query_fold(q, source.test_folds, settings.split_seed) == 0 for q in truth.query_ids]
    )
    X_all = np.asarray(embed(list(truth.prompts)), dtype=np.float64)
    pool = tuple(q for q, t in zip(truth.query_ids, is_test, strict=True) if not t)
    test = truth_rows(truth, is_test)
    stage = _Stage(
        pool=pool,
        row_of={q: i for i, q in enumerate(truth.query_ids)},
        X=X_all,
        test=test,
        X_test=X_all[is_test],
        weak=weak,
        strong=strong,
    )
    start_apgr = _test_apgr(settings.start_router, stage)
    grouped = group_by_query(o for o in rows if o.query_id in set(pool))
    counts = [len(v) for by_model in grouped.values() for v in by_model.values()]
    result = SourceResult(
        name=source.name,
        weak=weak,
        strong=strong,
        n_pool=len(pool),
        n_test=len(test.query_ids),
        obs_per_pair=float(np.mean(counts)),
        checkpoints=_checkpoints(settings.checkpoints, len(pool)),
        baselines={r.name: metric_row(r) for r in evaluate_routers({}, test)},
        start_apgr=start_apgr,
    )
    by_query = {q: [o for rs in by_model.values() for o in rs] for q, by_model in grouped.items()}
    seeds = range(seed, seed + settings.n_seeds)
    for kind in settings.routers:
        result.curves[kind] = {s: [] for s in SCHEMES}
        for s in seeds:
            arms = (
                Arm("dars", by_query),
                Arm(
                    "single-shot",
                    _regroup(one_sample([o for v in by_query.values() for o in v], s)),
                ),
            )
            for arm in arms:
                result.curves[kind][arm.scheme].append(
                    replay(
                        stage,
                        arm,
                        kind,
                        embed,
                        settings,
                        seed=s,
                        start=settings.start_router,
                        start_apgr=start_apgr,
                    )
                )
        say(f"{source.name}: {kind} done")
    return result


def _regroup(rows: Sequence[Observation]) -> dict[str, list[Observation]]:
    out: dict[str, list[Observation]] = {}
    for obs in rows:
        out.setdefault(obs.query_id, []).append(obs)
    return out


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
    """Replay every source and write ``learning-curve.{md,json}`` and its PNG into ``out_dir``."""
    from router_models.experiments.learning_curve_report import body, numbers, plot

    report = ReportFiles(
        out_dir,
        "learning-curve",
        MODULE,
        argv,
        data_dir,
        seeds=f"replay seeds {seed}..{seed + settings.n_seeds - 1} (order, single-shot draw, "
        f"router random_state); test slice and gate slice by query hash (seeds "
        f"{settings.split_seed}, {settings.split_seed + 1})",
    )
    embed = embed or make_embedder()
    results = [run_source(s, data_dir, embed, settings, seed=seed) for s in settings.sources]
    png = out_dir / "learning-curve.png"
    plot(results, png)
    files = [s.file for s in settings.sources if not Path(s.file).exists()]
    paths = report.write(
        "Learning curve of the live loop: DARS vs single-shot labels, gated promotion",
        files,
        body(results, settings, png.name),
        numbers(results, settings),
    )
    paths["png"] = png
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m router_models.experiments.learning_curve``."""
    import sys

    from threadpoolctl import threadpool_limits

    parser = base_parser(__doc__.splitlines()[0], "router_models/reports")
    parser.add_argument("--seeds", type=int, default=Settings.n_seeds, help="replay seeds")
    parser.add_argument("--routers", default=",".join(Settings.routers), help="knn and/or mlp")
    parser.add_argument(
        "--checkpoints",
        default=",".join(map(str, Settings.checkpoints)),
        help="numbers of live queries at which the loop retrains",
    )
    parser.add_argument("--margin", type=float, default=Settings.margin, help="APGR points")
    parser.add_argument("--start", default=START_ROUTER, help="the serving router at n = 0")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    limit_threads(args.threads)
    settings = Settings(
        checkpoints=tuple(int(n) for n in args.checkpoints.split(",")),
        n_seeds=args.seeds,
        routers=tuple(args.routers.split(",")),
        margin=args.margin,
        start_router=args.start,
    )
    with threadpool_limits(args.threads):
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
