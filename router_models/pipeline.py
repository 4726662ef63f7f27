"""The ``dars-train`` stages as plain functions: observations -> labels -> router ->
evaluation -> ONNX file (:func:`build_labels`, :func:`train_router`, :func:`evaluate_models`,
:func:`export_router`, all of them from one config: :func:`run_pipeline`).

Scripts and reports drive the same code as the CLI. A run is reproducible: the seed seeds
Python, NumPy, torch, the single-shot draws and the estimator's ``random_state``.
"""

from __future__ import annotations

import inspect
import json
import pickle
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from router_models.config import ConfigError, RunConfig
from router_models.contract import META_QUERY_POLICY, Calibration, query_lengths
from router_models.evaluate import (
    RouterReport,
    Truth,
    evaluate_routers,
    save_reports,
    truth_from_observations,
)
from router_models.features import Embedder, prepare_prompts
from router_models.inputs import check_inputs, load_data
from router_models.labels import (
    LabelSet,
    NliEquivalence,
    choose_pair,
    make_labels,
    model_means,
    multi_pair_labels,
)
from router_models.observations import Observation, PathLike
from router_models.query_prep import DEFAULT_QUERY_POLICY, QueryPolicy

__all__ = [
    "TrainedRouter",
    "build_labels",
    "evaluate_models",
    "export_router",
    "load_data",
    "run_pipeline",
    "say",
    "seed_everything",
    "train_router",
]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the estimators get ``random_state`` separately)."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:  # torch is a dependency; stay usable without it for data-only work
        return
    torch.manual_seed(seed)


def _label_params(scheme: str, params: Mapping[str, Any], seed: int, embed: Any) -> dict[str, Any]:
    """Scheme keyword arguments from config values (seed, NLI path, embed function)."""
    out = dict(params)
    if scheme == "single-shot":
        out.setdefault("seed", seed)
    if scheme == "semantic-entropy":
        nli_path = out.pop("nli_model", None)
        if nli_path:
            out["nli"] = NliEquivalence(nli_path)
        elif out.get("mode", "auto") in ("auto", "embedding") and embed is not None:
            out["embed"] = embed
    if "prior" in out:
        out["prior"] = tuple(out["prior"])
    return out


def build_labels(
    observations: Sequence[Observation],
    *,
    weak: str | None,
    strong: str | None,
    scheme: str,
    params: Mapping[str, Any] | None = None,
    pairs: str | Sequence[Sequence[str]] | None = None,
    seed: int = 0,
    embed: Any = None,
) -> LabelSet:
    """Labels for one pair (given, or chosen by mean quality) or several stacked pairs.

    ``pairs``: None = (weak, strong); ``by-mean`` = :func:`choose_pair`; ``all`` = every
    pair ordered by mean quality; a list of [weak, strong] = those pairs. Stacked pairs score
    (weak, strong) when both models are in them, else the weakest vs the strongest model
    (``all``) or the first listed pair. ``by-mean`` with a (weak, strong) pair that the data
    holds but does not pick is refused (:func:`_by_mean_pair`).
    """
    kwargs = _label_params(scheme, params or {}, seed, embed)
    if pairs == "by-mean":
        weak, strong = _by_mean_pair(observations, weak, strong)
    if pairs is None or pairs == "by-mean":
        weak, strong = choose_pair(observations, weak, strong)
        return make_labels(observations, weak, strong, scheme, **kwargs)
    if isinstance(pairs, str) and pairs != "all":
        raise ConfigError(f"labels.pairs must be null, 'by-mean', 'all' or a list, got {pairs!r}")
    pair_list = None if pairs == "all" else [(str(p[0]), str(p[1])) for p in pairs]
    labels = multi_pair_labels(observations, scheme, pair_list, **kwargs)
    if weak is not None and strong is not None and {weak, strong} <= set(labels.models()):
        labels = replace(labels, score_pair=(weak, strong))
    return labels


def _by_mean_pair(
    observations: Sequence[Observation], weak: str | None, strong: str | None
) -> tuple[str, str]:
    """The training data's weakest and strongest model, unless that contradicts the names.

    ``by-mean`` exists for training data without the deployed pair (the shipped GSM8K config
    trains on seven other models); there the names only label the evaluated and exported
    pair. When the data does hold both named models and by-mean picks another pair, the
    user's names would be silently overridden: that is an error, not a warning, because the
    run would otherwise train a router for a pair nobody asked for.
    """
    chosen = choose_pair(observations)
    if weak is None or strong is None or chosen == (weak, strong):
        return chosen
    if {weak, strong} <= set(model_means(observations)):
        raise ConfigError(
            f"labels.pairs: by-mean would train on {chosen[0]} -> {chosen[1]} (the training "
            f"data's weakest and strongest model), but models names {weak} -> {strong}, which "
            "the training data also holds. Drop 'pairs: by-mean' to train on the named pair, "
            "or name the pair you want under models"
        )
    return chosen


@dataclass
class TrainedRouter:
    """A fitted estimator and what the export needs to describe it (pickled by ``train``).

    (``weak_model``, ``strong_model``) is the pair the router scores; ``models`` are the
    models of the training pairs, in the index order of a pair-native estimator (MF,
    SW-ranking). Pickle runs code when loaded: load only router files you made yourself.
    """

    kind: str
    params: dict[str, Any]
    estimator: Any
    label_scheme: str
    weak_model: str
    strong_model: str
    embedding_model_id: str
    embedding_dim: int
    seed: int
    n_train: int
    models: tuple[str, ...] = ()

    def save(self, path: PathLike) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as handle:
            pickle.dump(self, handle)
        return out

    @classmethod
    def load(cls, path: PathLike) -> TrainedRouter:
        with open(path, "rb") as handle:
            loaded = pickle.load(handle)
        if not isinstance(loaded, cls):
            raise ValueError(f"{path} does not hold a trained router")
        return loaded

    def predict(self, X: np.ndarray, *, query_length: Any = None) -> np.ndarray:
        """Scores of embeddings; ``query_length`` (see ``contract.query_lengths``) is needed by
        routers that take it and ignored by the others."""
        extra = _length_kwargs(self.estimator, query_length)
        scores = self.estimator.predict(np.asarray(X, dtype=np.float32), **extra)
        return np.asarray(scores, dtype=np.float64)

    def predict_prompts(self, prompts: Sequence[str], X: np.ndarray) -> np.ndarray:
        """Scores of prompts whose embeddings are ``X`` (the lengths come from the prompts)."""
        return self.predict(X, query_length=query_lengths(prompts))


def _length_kwargs(estimator: Any, query_length: Any) -> dict[str, Any]:
    """``{"query_length": ...}`` for a router that takes it, else nothing."""
    from router_models.registry import accepts_query_length

    if not accepts_query_length(estimator):
        return {}
    if query_length is None:
        raise ValueError(f"{type(estimator).__name__} needs query_length")
    return {"query_length": np.asarray(query_length, dtype=np.float64)}


_PAIR_PARAMS = ("n_models", "strong_index", "weak_index")


def _pair_params(kind: str, labels: LabelSet) -> tuple[dict[str, Any], dict[str, Any]]:
    """(constructor, fit) keywords that make a pair-native router learn every pair of a
    stacked label set and score its scored pair; nothing for one pair or another router."""
    from router_models.registry import ROUTERS

    cls: Any = ROUTERS[kind]
    native = "pairs" in inspect.signature(cls.fit).parameters and set(_PAIR_PARAMS) <= set(
        inspect.signature(cls).parameters
    )
    if not native or len(labels.distinct_pairs()) < 2:
        return {}, {}
    models = labels.models()
    weak, strong = labels.scored_pair()
    if weak not in models or strong not in models:
        raise ConfigError(f"scored pair ({weak}, {strong}) is not among the models {models}")
    init = dict(
        zip(_PAIR_PARAMS, (len(models), models.index(strong), models.index(weak)), strict=True)
    )
    return init, {"pairs": labels.pair_indices()}


def train_router(
    labels: LabelSet,
    embedder: Embedder,
    *,
    kind: str,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    query_policy: QueryPolicy = DEFAULT_QUERY_POLICY,
) -> TrainedRouter:
    """Embed the label prompts and fit a registry router on (embedding, target, weight).

    Prompts are prepared as the service prepares a query (``query_policy``) before embedding.

    With several stacked model pairs, a router whose ``fit`` takes ``pairs`` (MF,
    SW-ranking) learns each row as its own pair and scores ``labels.scored_pair()``; the
    others fit every row as strong-vs-weak.
    """
    from router_models.registry import ROUTERS, make_router

    if kind not in ROUTERS:
        raise ConfigError(f"unknown router {kind!r}; choose from {sorted(ROUTERS)}")
    kwargs = dict(params or {})
    if "random_state" in inspect.signature(ROUTERS[kind]).parameters:
        kwargs.setdefault("random_state", seed)
    pair_init, pair_fit = _pair_params(kind, labels)
    kwargs.update(pair_init)
    seed_everything(seed)
    texts = prepare_prompts(labels.prompts, query_policy)
    X = embedder(texts)
    estimator = make_router(kind, **kwargs)
    extra = _length_kwargs(estimator, query_lengths(texts, query_policy.max_chars))
    target = labels.target.astype(np.float64)
    estimator.fit(X, target, sample_weight=labels.weight, **extra, **pair_fit)
    weak, strong = labels.scored_pair()
    return TrainedRouter(
        kind=kind,
        params=kwargs,
        estimator=estimator,
        label_scheme=labels.scheme,
        weak_model=weak,
        strong_model=strong,
        embedding_model_id=embedder.model_id,
        embedding_dim=int(X.shape[1]),
        seed=seed,
        n_train=len(labels),
        models=labels.models(),
    )


def evaluate_models(
    truth: Truth,
    embedder: Embedder,
    *,
    routers: Mapping[str, TrainedRouter] | None = None,
    onnx_files: Mapping[str, PathLike] | None = None,
    baselines: bool = True,
    query_policy: QueryPolicy = DEFAULT_QUERY_POLICY,
) -> list[RouterReport]:
    """Reports of trained routers and/or ONNX router files on one test set (+ baselines)."""
    scores: dict[str, np.ndarray] = {}
    if not routers and not onnx_files:
        return evaluate_routers(scores, truth, baselines=baselines)
    texts = prepare_prompts(truth.prompts, query_policy)
    X = embedder(texts)
    for name, router in (routers or {}).items():
        scores[name] = router.predict_prompts(texts, X)
    if onnx_files:
        from router_models.export_onnx import load_router_scores

        lengths = query_lengths(texts, query_policy.max_chars)
        for name, path in onnx_files.items():
            scores[name] = load_router_scores(path, X, query_length=lengths)
    return evaluate_routers(scores, truth, baselines=baselines)


def export_router(
    router: TrainedRouter,
    path: PathLike,
    *,
    calibration_prompts: Sequence[str],
    embedder: Embedder,
    weak: str | None = None,
    strong: str | None = None,
    cloud_share: float | None = None,
    default_threshold: float | None = None,
    query_policy: QueryPolicy | None = None,
) -> Path:
    """Write the ONNX router with its metadata; calibration = score quantiles on held-out prompts.

    The default threshold is ``default_threshold`` if given, else the threshold that sends
    ``cloud_share`` of the calibration prompts to the cloud, else 0.5. A ``query_policy`` is
    written as ``dars.query_policy``; without one the service applies its own setting.
    """
    from router_models.export_onnx import build_metadata, save_router

    if not calibration_prompts:
        raise ConfigError("export needs calibration prompts")
    policy = DEFAULT_QUERY_POLICY if query_policy is None else query_policy
    texts = prepare_prompts(calibration_prompts, policy)
    scores = router.predict_prompts(texts, embedder(texts))
    calibration = Calibration.from_scores(scores)
    if default_threshold is None:
        default_threshold = (
            0.5 if cloud_share is None else calibration.threshold_for_cloud_share(cloud_share)
        )
    metadata = build_metadata(
        embedding_model_id=router.embedding_model_id,
        embedding_dim=router.embedding_dim,
        label_scheme=router.label_scheme,
        default_threshold=float(np.clip(default_threshold, 0.0, 1.0)),
        calibration=calibration,
        models={"edge": weak or router.weak_model, "cloud": strong or router.strong_model},
        router=router.kind,
    )
    if query_policy is not None:
        metadata[META_QUERY_POLICY] = query_policy.to_json()
    return save_router(router.estimator.to_onnx(metadata), Path(path))


def run_pipeline(config: RunConfig, *, progress: bool = True) -> dict[str, Path]:
    """labels -> train -> evaluate -> export for one config; returns the written files.

    Everything that can fail on the user's input (missing files, empty filters, the held-out
    split, the leak guard, labels, the encoder) runs before the output directory is created,
    so a failed first run leaves nothing behind. A config with a list of models trains a
    K-model quality router instead (:mod:`router_models.pipeline_quality`).
    """
    if config.k_models:
        from router_models.pipeline_quality import run_quality_pipeline

        return run_quality_pipeline(config, progress=progress)
    check_inputs(config)
    seed_everything(config.seed)
    embedder = config.embedding.embedder(progress)
    policy = config.policy()
    truth, labels = _prepare(config, embedder)
    say(f"embedding {len(set(labels.prompts) | set(truth.prompts))} prompts")
    embedder(prepare_prompts(list(dict.fromkeys((*labels.prompts, *truth.prompts))), policy))
    weak, strong = config.models["weak"], config.models["strong"]
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"labels": out / "labels.json"}
    labels.save(files["labels"])
    say(f"training {config.router_kind} on {len(labels)} queries")
    router = train_router(
        labels,
        embedder,
        kind=config.router_kind,
        params=config.router_params,
        seed=config.seed,
        query_policy=policy,
    )
    files["router"] = router.save(out / "router.pkl")
    say(f"evaluating on {len(truth.query_ids)} test queries")
    name = f"{config.router_kind}-{config.label_scheme}"
    reports = evaluate_models(truth, embedder, routers={name: router}, query_policy=policy)
    files.update(save_reports(reports, out, title=f"{weak} -> {strong}"))
    say("exporting")
    files["onnx"] = export_router(
        router,
        out / "router.onnx",
        calibration_prompts=truth.prompts,
        embedder=embedder,
        weak=weak,
        strong=strong,
        cloud_share=config.cloud_share,
        default_threshold=config.default_threshold,
        query_policy=None if config.query_policy is None else policy,
    )
    files["config"] = out / "config.resolved.json"
    files["config"].write_text(json.dumps(asdict(config), indent=2), encoding="utf-8")
    return files


def _prepare(config: RunConfig, embedder: Embedder) -> tuple[Truth, LabelSet]:
    """The test truth and the training labels of a run (reads data, writes nothing)."""
    weak, strong = config.models["weak"], config.models["strong"]
    holdout, seed = config.holdout, config.holdout_seed()
    if holdout is not None:
        say(f"held-out split by query: fraction {holdout.fraction}, seed {seed}")
    say("reading test observations")
    test_rows = load_data(config.test, holdout=holdout, side="test", seed=seed)
    truth = truth_from_observations(test_rows, weak, strong)
    say("reading training observations")
    train_rows = load_data(
        config.train,
        exclude=truth if config.exclude_test_queries else None,
        holdout=holdout,
        side="train",
        seed=seed,
        report=say,
    )
    say(f"labels: {config.label_scheme}")
    labels = build_labels(
        train_rows,
        weak=weak,
        strong=strong,
        scheme=config.label_scheme,
        params=config.label_params,
        pairs=config.label_pairs,
        seed=config.seed,
        embed=embedder,
    )
    if labels.scored_pair() != (weak, strong):
        trained = " -> ".join(labels.scored_pair())
        say(f"trained on {trained}; evaluated and exported as {weak} -> {strong} (models)")
    return truth, labels


def say(message: str) -> None:
    """A progress line on stderr, prefixed with the program name."""
    print(f"dars-train: {message}", file=sys.stderr)
