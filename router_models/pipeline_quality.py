"""``dars-train run`` for K models: cells -> quality router -> AIQ -> contract-v2 ONNX file.

A config whose ``models`` is a list (:mod:`router_models.config`) lands here from
:func:`router_models.pipeline.run_pipeline`. The steps follow
:mod:`router_models.experiments.n_way` without its grid search and two-model comparison:

1. test truth = DARS cells (mean of all observations) of the held-out queries every model
   answered; training cells (``dars``: mean, count-weighted; ``single-shot``: one seeded draw)
   of the training queries, test queries (id or prompt) dropped;
2. a ``*_quality`` router (``registry.QUALITY_ROUTERS``) fitted on the training cells;
3. AIQ and cost-to-reach of ``argmax q_hat - lambda * c`` on the test queries
   (:mod:`router_models.evaluate_multi`), beside each single model, random mixtures and the
   oracle (``evaluation.md`` / ``evaluation.json``);
4. ``router.onnx``: ``dars.models`` = the model list, ``dars.quality_calibration`` = a seeded
   sample of the router's predictions on the test queries; checked against the contract
   before anything is written.

Everything that can fail (inputs, prices, labels, encoder, fit, contract) runs before the
output directory is created.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from router_models.config import ConfigError, RunConfig
from router_models.contract import META_QUERY_POLICY
from router_models.evaluate import Truth
from router_models.evaluate_multi import (
    Curve,
    MultiReport,
    evaluate_curve,
    mixture_curve,
    reports_table,
    single_model_points,
    sweep,
)
from router_models.export_onnx import build_quality_metadata, check_router_model, save_router
from router_models.features import prepare_prompts
from router_models.inputs import check_inputs, load_data
from router_models.labels import QualityLabels, quality_labels
from router_models.prices import query_costs
from router_models.query_prep import QueryPolicy
from router_models.registry import make_router

__all__ = ["fit_quality_router", "quality_router_onnx", "run_quality_pipeline"]


def run_quality_pipeline(config: RunConfig, *, progress: bool = True) -> dict[str, Path]:
    """Train, evaluate and export a K-model quality router; returns the written files."""
    from router_models.pipeline import say, seed_everything

    if not config.k_models:
        raise ConfigError("run_quality_pipeline needs a config with a list of models")
    check_inputs(config)
    seed_everything(config.seed)
    models = tuple(config.quality_models)
    policy = config.policy()
    holdout, split_seed = config.holdout, config.holdout_seed()
    say(f"K-model run over {len(models)} models: {', '.join(models)}")
    test_rows = load_data(config.test, holdout=holdout, side="test", seed=split_seed)
    all_test = quality_labels(test_rows, models)
    test = all_test.take(np.flatnonzero(all_test.complete()))
    if not len(test):
        raise ConfigError(f"no test query was answered by every one of the models {list(models)}")
    # The leak guard reads only the test ids and prompts (every test query, complete or not).
    guard = Truth(
        all_test.query_ids, all_test.prompts, np.zeros(len(all_test)), np.zeros(len(all_test))
    )
    train_rows = load_data(
        config.train,
        exclude=guard if config.exclude_test_queries else None,
        holdout=holdout,
        side="train",
        seed=split_seed,
        report=say,
    )
    train = quality_labels(train_rows, models, scheme=config.label_scheme, seed=config.seed)
    unseen = [m for m, n in zip(models, train.count.sum(axis=0), strict=True) if n == 0]
    if unseen:
        raise ConfigError(f"the training data has no observation of {unseen}")
    decision_cost = query_costs(train.prompts, train.response_chars, models).mean(axis=0)

    embedder = config.embedding.embedder(progress)
    train_texts = prepare_prompts(list(train.prompts), policy)
    test_texts = prepare_prompts(list(test.prompts), policy)
    say(f"embedding {len(set(train_texts) | set(test_texts))} prompts")
    X_train, X_test = embedder(train_texts), embedder(test_texts)

    say(f"training {config.router_kind} on {len(train)} queries ({config.label_scheme} cells)")
    estimator = fit_quality_router(
        config.router_kind, config.router_params, config.seed, X_train, train
    )
    q_hat = np.asarray(estimator.predict(X_test), dtype=np.float64).reshape(len(test), -1)

    say(f"evaluating on {len(test)} test queries")
    name = f"{config.router_kind}-{config.label_scheme}"
    reports = _reports(name, q_hat, decision_cost, test)

    onnx_model = quality_router_onnx(  # checked: the contract, before the output directory
        estimator,
        embedding_model_id=embedder.model_id,
        label_scheme=config.label_scheme,
        models=models,
        router_kind=config.router_kind,
        calibration_quality=q_hat,
        seed=config.seed,
        query_policy=policy if config.query_policy is not None else None,
    )

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{len(models)} models ({len(test)} test queries)"
    files = _save_reports(reports, out, title, decision_cost, models)
    say("exporting")
    files["onnx"] = save_router(onnx_model, out / "router.onnx")
    files["config"] = out / "config.resolved.json"
    files["config"].write_text(json.dumps(asdict(config), indent=2), encoding="utf-8")
    return files


def fit_quality_router(
    kind: str, params: Mapping[str, Any], seed: int, X: np.ndarray, labels: QualityLabels
) -> Any:
    """A ``*_quality`` registry router fitted on the label cells of ``labels`` (embeddings
    ``X``), each cell weighted by its observation count; ``random_state`` defaults to ``seed``."""
    kwargs = dict(params)
    kwargs.setdefault("random_state", seed)
    estimator = make_router(kind, **kwargs)
    estimator.fit(X, labels.mean, sample_weight=labels.cell_weights())
    return estimator


def quality_router_onnx(
    estimator: Any,
    *,
    embedding_model_id: str,
    label_scheme: str,
    models: tuple[str, ...],
    router_kind: str,
    calibration_quality: np.ndarray,
    seed: int,
    query_policy: QueryPolicy | None = None,
) -> onnx.ModelProto:
    """The fitted router as a contract-v2 model, checked against the contract.

    ``dars.models`` = ``models`` (the column order it was fitted in); calibration rows = a
    sample (seeded by ``seed``) of ``calibration_quality``, its predictions on held-out
    queries; ``query_policy`` is written as ``dars.query_policy`` when given.
    """
    metadata = build_quality_metadata(
        embedding_model_id=embedding_model_id,
        embedding_dim=int(estimator.n_features_in_),
        label_scheme=label_scheme,
        models=models,
        router=router_kind,
        calibration_quality=calibration_quality,
        calibration_seed=seed,
    )
    if query_policy is not None:
        metadata[META_QUERY_POLICY] = query_policy.to_json()
    onnx_model: onnx.ModelProto = estimator.to_onnx(metadata)
    check_router_model(onnx_model)
    return onnx_model


def _reports(
    name: str, q_hat: np.ndarray, decision_cost: np.ndarray, test: QualityLabels
) -> dict[str, MultiReport]:
    """Single models, random mixtures, the router and the oracle on the test cells."""
    truth = test.mean
    true_cost = query_costs(test.prompts, test.response_chars, test.models)
    singles = single_model_points(truth, true_cost)
    reports = {
        model: evaluate_curve(
            model, Curve(singles.cost[k : k + 1], singles.quality[k : k + 1]), singles
        )
        for k, model in enumerate(test.models)
    }
    curves = {
        "random mixtures": mixture_curve(singles),
        name: sweep(q_hat, decision_cost, truth, true_cost),
        "oracle": sweep(truth, decision_cost, truth, true_cost),
    }
    reports.update({n: evaluate_curve(n, curve, singles) for n, curve in curves.items()})
    return reports


def _save_reports(
    reports: Mapping[str, MultiReport],
    out: Path,
    title: str,
    decision_cost: np.ndarray,
    models: tuple[str, ...],
) -> dict[str, Path]:
    """``evaluation.md`` (table) and ``evaluation.json`` (rows and decision costs)."""
    rows = reports_table(reports)
    columns = list(rows[0])
    lines = [
        f"# {title}",
        "",
        "AIQ = mean quality of the quality-vs-cost hull over the single models' cost range; "
        "cost@x% = USD per 1k requests to reach x% of the best single model.",
        "",
        "| " + " | ".join(columns) + " |",
        "|---|" + "---:|" * (len(columns) - 1),
    ]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows]
    files = {"markdown": out / "evaluation.md", "json": out / "evaluation.json"}
    files["markdown"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    payload: dict[str, Any] = {
        "title": title,
        "decision_cost_usd": dict(zip(models, decision_cost.tolist(), strict=True)),
        "reports": [{k: _json_value(v) for k, v in row.items()} for row in rows],
    }
    files["json"].write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return files


def _cell(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return "–" if not np.isfinite(value) else f"{value:.4f}"


def _json_value(value: float | str) -> float | str | None:
    if isinstance(value, str):
        return value
    return float(value) if np.isfinite(value) else None
