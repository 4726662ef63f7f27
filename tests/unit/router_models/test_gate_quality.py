"""The K-model gate (AIQ) on real contract-v2 files and fitted quality routers.

Three models cost 1, 4 and 5 (USD per query). A hidden direction ``w`` decides which queries
are hard: the cheap model fails them, the mid and dear models answer them; every model answers
the easy ones. A router that knows ``w`` sends easy queries to the cheap model and hard ones to
the mid model (quality 1 at a mean cost of 2.5); a constant router can only mix models at
random, and a router that learned ``-w`` sends the hard queries to the cheap model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.onnx_routers import make_linear_router, random_unit_vectors
from helpers.quality_routers import make_quality_router

from router_models.export_onnx import check_router_model
from router_models.labels import QualityLabels
from router_models.pipeline_quality import fit_quality_router, quality_router_onnx
from router_models.promotion import GateDecision, GatePolicy, QualitySlice, gate_quality
from router_models.promotion.choices import route_choices

DIM, N = 16, 60
MODELS = ("cheap", "mid", "dear")
COST = np.asarray([1.0, 4.0, 5.0])


def _labels(X: np.ndarray, w: np.ndarray, prefix: str) -> QualityLabels:
    hard = X @ w > 0
    mean = np.stack([np.where(hard, 0.0, 1.0), np.ones(len(X)), np.ones(len(X))], axis=1)
    return QualityLabels(
        scheme="dars",
        models=MODELS,
        query_ids=tuple(f"{prefix}-{i}" for i in range(len(X))),
        prompts=tuple(f"{prefix} prompt {i}" for i in range(len(X))),
        datasets=("synthetic",) * len(X),
        mean=mean,
        std=np.zeros_like(mean),
        count=np.full(mean.shape, 3),
        response_chars=np.full(mean.shape, np.nan),
    )


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    w = random_unit_vectors(1, DIM, seed=7)[0]
    X_train, X_held = random_unit_vectors(300, DIM, seed=2), random_unit_vectors(N, DIM, seed=1)
    train, held = _labels(X_train, w, "train"), _labels(X_held, w, "held")
    flipped = _labels(X_train, -w, "train")
    heldout = QualitySlice(held, np.tile(COST, (N, 1)), COST.copy())
    good = fit_quality_router("knn_quality", {"n_neighbors": 5}, 0, X_train, train)
    bad = fit_quality_router("knn_quality", {"n_neighbors": 5}, 0, X_train, flipped)
    return {"heldout": heldout, "X": X_held, "good": good, "bad": bad, "train": train}


def _export(estimator: Any, path: Path, world: dict[str, Any]) -> Path:
    model = quality_router_onnx(
        estimator,
        embedding_model_id="test/encoder",
        label_scheme="dars",
        models=MODELS,
        router_kind="knn_quality",
        calibration_quality=estimator.predict(world["X"]),
        seed=0,
    )
    path.write_bytes(model.SerializeToString())
    return path


def test_a_clearly_better_candidate_is_promoted(world: dict[str, Any], tmp_path: Path) -> None:
    serving = make_quality_router(tmp_path / "const.onnx", [0.5, 0.9, 0.95], MODELS, dim=DIM)
    decision = gate_quality(
        serving, world["good"], world["heldout"], world["X"], policy=GatePolicy(min_queries=N)
    )
    assert (decision.verdict, decision.reason, decision.metric) == (
        "promote",
        "better-by-margin",
        "AIQ",
    )
    assert decision.models == MODELS and decision.weak_model is None
    assert decision.margin == 0.01  # the AIQ margin, in AIQ's own [0, 1] unit
    assert decision.candidate.aiq > decision.serving.aiq + 0.05  # type: ignore[union-attr]
    assert 0 < decision.delta_lower <= decision.delta and decision.n_resamples == 1000
    assert decision.serving.sha256 is not None and decision.candidate.sha256 is None
    assert GateDecision.from_json(decision.to_json()) == decision
    assert json.loads(decision.to_json())["candidate"]["reach_cost"]["cost@100%"] > 0


def test_a_worse_candidate_is_refused(world: dict[str, Any], tmp_path: Path) -> None:
    serving = _export(world["good"], tmp_path / "good.onnx", world)
    decision = gate_quality(
        serving, world["bad"], world["heldout"], world["X"], policy=GatePolicy(min_queries=N)
    )
    assert (decision.verdict, decision.reason) == ("refuse", "not-better")
    assert decision.delta < 0 and decision.delta_lower < 0


def test_a_file_is_read_in_its_own_model_order(world: dict[str, Any], tmp_path: Path) -> None:
    """The same constant router written with its columns reversed decides the same way."""
    heldout, X = world["heldout"], world["X"]
    forward = make_quality_router(tmp_path / "f.onnx", [0.5, 0.9, 0.95], MODELS, dim=DIM)
    backward = make_quality_router(tmp_path / "b.onnx", [0.95, 0.9, 0.5], MODELS[::-1], dim=DIM)
    args = (X, heldout.labels.prompts, MODELS, heldout.decision_cost)
    np.testing.assert_array_equal(route_choices(forward, *args), route_choices(backward, *args))
    other = make_quality_router(tmp_path / "o.onnx", [0.5, 0.9], ("cheap", "other"), dim=DIM)
    with pytest.raises(ValueError, match=r"lacks the model\(s\) \['mid', 'dear'\]"):
        route_choices(other, *args)


def test_a_two_model_serving_file_is_gated_on_its_thresholds(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """A score router over (cheap, dear) can only trade those two: the K-model candidate,
    which also knows the mid model, beats it."""
    serving = make_linear_router(
        tmp_path / "pair.onnx", dim=DIM, edge_model="cheap", cloud_model="dear"
    )
    heldout, X = world["heldout"], world["X"]
    choices = route_choices(serving, X, heldout.labels.prompts, MODELS, heldout.decision_cost)
    assert set(np.unique(choices)) == {0, 2}  # never the mid model
    decision = gate_quality(serving, world["good"], heldout, X, policy=GatePolicy(min_queries=N))
    assert decision.promote and decision.delta > 0.05


def test_the_exported_candidate_passes_the_contract(world: dict[str, Any], tmp_path: Path) -> None:
    import onnx

    path = _export(world["good"], tmp_path / "cand.onnx", world)
    signature = check_router_model(onnx.load(str(path)))
    assert signature.models == MODELS and signature.n_models == 3 and signature.has_quality


def test_quality_slice_needs_complete_rows_and_costs(world: dict[str, Any]) -> None:
    held: QualityLabels = world["heldout"].labels
    with pytest.raises(ValueError, match="shapes"):
        QualitySlice(held, np.ones((N, 2)), COST)
    with pytest.raises(ValueError, match="above 0"):
        QualitySlice(held, np.zeros((N, 3)), np.zeros(3))
    gap = QualityLabels(**{**held.__dict__, "count": np.where(np.arange(3) == 0, 0, held.count)})
    with pytest.raises(ValueError, match="every model"):
        QualitySlice(gap, np.ones((N, 3)), COST)
